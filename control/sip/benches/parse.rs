//! Cost per message of the parser and serializer: a REGISTER as a Jabber/Webex client
//! sends it through MRA, and an INVITE with an SRTP SDP offer (plus parsing that SDP).
#![allow(clippy::unwrap_used)]

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use edgeway_sip::sdp::SessionDescription;
use edgeway_sip::{Message, ParseLimits, StreamFramer};

const REGISTER: &str = "REGISTER sip:cucm.example.com SIP/2.0\r\n\
Via: SIP/2.0/TLS 198.51.100.23:51234;branch=z9hG4bK3b7f1c2a;rport\r\n\
Max-Forwards: 70\r\n\
From: <sip:alice@example.com>;tag=4f5a8c1b\r\n\
To: <sip:alice@example.com>\r\n\
Call-ID: 0c2d5a6e-1f3b-4c7d-9e8f-a1b2c3d4e5f6@198.51.100.23\r\n\
CSeq: 101 REGISTER\r\n\
Contact: <sip:8f2a1c4e-77b3@198.51.100.23:51234;transport=tls>;+sip.instance=\"<urn:uuid:00000000-0000-0000-0000-0123456789ab>\";+u.sip!devicename.ccm.cisco.com=\"CSFALICE\";expires=3600\r\n\
Supported: replaces,join,sdp-anat,norefersub,resource-priority,extended-refer,X-cisco-callinfo,X-cisco-serviceuri,X-cisco-escapecodes,X-cisco-service-control,X-cisco-srtp-fallback,X-cisco-monrec,X-cisco-config,X-cisco-sis-7.0.0,X-cisco-xsi-8.5.1\r\n\
Allow: ACK,BYE,CANCEL,INVITE,NOTIFY,OPTIONS,REFER,REGISTER,UPDATE,SUBSCRIBE,INFO\r\n\
User-Agent: Cisco-CSF\r\n\
Expires: 3600\r\n\
Content-Length: 0\r\n\r\n";

const SDP: &str = "v=0\r\n\
o=Cisco-SIPUA 2874 0 IN IP4 198.51.100.23\r\n\
s=SIP Call\r\n\
b=AS:4000\r\n\
t=0 0\r\n\
m=audio 24580 RTP/SAVP 114 9 124 0 8 116 18 101\r\n\
c=IN IP4 198.51.100.23\r\n\
b=TIAS:64000\r\n\
a=rtpmap:114 opus/48000/2\r\n\
a=fmtp:114 maxplaybackrate=16000;sprop-maxcapturerate=16000;maxaveragebitrate=64000;stereo=0;sprop-stereo=0;usedtx=0\r\n\
a=rtpmap:9 G722/8000\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:18 G729/8000\r\n\
a=fmtp:18 annexb=no\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-15\r\n\
a=crypto:1 AEAD_AES_256_GCM inline:vSomYUhN6Bj5v2PJjn0ZKyt6kwiS3dqW6RJlRRzBzq7Q6ZKf2OfJkL0mNkI=\r\n\
a=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^31\r\n\
a=sendrecv\r\n\
m=video 24582 RTP/SAVP 126 97\r\n\
c=IN IP4 198.51.100.23\r\n\
b=TIAS:4000000\r\n\
a=rtpmap:126 H264/90000\r\n\
a=fmtp:126 profile-level-id=42801F;packetization-mode=1;level-asymmetry-allowed=1\r\n\
a=rtpmap:97 H264/90000\r\n\
a=rtcp-fb:* nack pli\r\n\
a=rtcp-fb:* ccm fir\r\n\
a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:NzB4d1BINUAvLEw6UzF3WSJ+PSdFcGdUJShpX1Zj|2^31\r\n\
a=content:main\r\n\
a=label:11\r\n\
a=sendrecv\r\n";

fn invite() -> Vec<u8> {
    let head = format!(
        "INVITE sip:bob@example.com SIP/2.0\r\n\
Via: SIP/2.0/TLS 198.51.100.23:51234;branch=z9hG4bK7d2e9f10;rport\r\n\
Max-Forwards: 70\r\n\
From: \"Alice Example\" <sip:alice@example.com>;tag=6a7b8c9d\r\n\
To: <sip:bob@example.com>\r\n\
Call-ID: 9e8d7c6b-5a4f-3e2d-1c0b-a9b8c7d6e5f4@198.51.100.23\r\n\
CSeq: 101 INVITE\r\n\
Contact: <sip:8f2a1c4e-77b3@198.51.100.23:51234;transport=tls>;+u.sip!devicename.ccm.cisco.com=\"CSFALICE\"\r\n\
Supported: replaces,join,sdp-anat,norefersub,resource-priority,extended-refer,X-cisco-callinfo\r\n\
Allow: ACK,BYE,CANCEL,INVITE,NOTIFY,OPTIONS,REFER,REGISTER,UPDATE,SUBSCRIBE,INFO\r\n\
Session-Expires: 1800\r\n\
User-Agent: Cisco-CSF\r\n\
Content-Type: application/sdp\r\n\
Content-Length: {}\r\n\r\n",
        SDP.len()
    );
    [head.as_bytes(), SDP.as_bytes()].concat()
}

fn bench(c: &mut Criterion) {
    let invite = invite();
    let mut g = c.benchmark_group("sip");
    g.throughput(Throughput::Elements(1));
    g.bench_function("parse REGISTER", |b| {
        b.iter(|| Message::parse(black_box(REGISTER.as_bytes())).unwrap())
    });
    g.bench_function("parse INVITE+SDP (message only)", |b| {
        b.iter(|| Message::parse(black_box(&invite)).unwrap())
    });
    g.bench_function("parse INVITE+SDP (message and SDP)", |b| {
        b.iter(|| {
            let m = Message::parse(black_box(&invite)).unwrap();
            SessionDescription::parse(m.body()).unwrap()
        })
    });
    let parsed = Message::parse(&invite).unwrap();
    g.bench_function("serialize INVITE+SDP", |b| {
        b.iter(|| black_box(&parsed).to_bytes())
    });
    let both = [REGISTER.as_bytes(), &invite].concat();
    g.bench_function("frame REGISTER+INVITE from a stream", |b| {
        b.iter(|| {
            let mut f = StreamFramer::new(ParseLimits::default());
            f.handle_data(black_box(&both)).unwrap();
            (f.poll_frame().unwrap(), f.poll_frame().unwrap())
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
