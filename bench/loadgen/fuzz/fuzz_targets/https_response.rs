//! The HTTPS load generator's response framing (`https_load::response_frame`) against
//! arbitrary bytes, as a broken or hostile server could send them: no panic; a frame never
//! claims more bytes than it was given nor fewer than its head; a frame found before the end
//! of stream is found again, the same, in exactly its own bytes (the next answer starts
//! where it says), and end of stream never un-completes an answer.
#![no_main]

use edgeway_loadgen::https_load::response_frame;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let open = response_frame(data, false);
    let closed = response_frame(data, true);
    if let Ok(Some(frame)) = open {
        assert!(frame.len <= data.len(), "{frame:?} beyond {} bytes", data.len());
        let head = data.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4);
        assert!(head.is_some_and(|h| frame.len >= h), "{frame:?} shorter than its head");
        assert_eq!(response_frame(&data[..frame.len], false), Ok(Some(frame)));
        assert_eq!(closed, Ok(Some(frame)), "end of stream changed a complete answer");
    }
    if let Ok(Some(frame)) = closed {
        assert!(frame.len <= data.len());
    }
    if open.is_err() {
        assert_eq!(open, closed, "end of stream changed a refusal");
    }
});
