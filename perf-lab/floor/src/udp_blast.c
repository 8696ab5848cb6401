// udp_blast: sends RATE pps (0: as fast as one core can) of 172-byte UDP payloads from SRC:5004
// to DST:40000-41998 (even ports) with sendmmsg (32 a call) for SECONDS, drains replies with recvmmsg, and
// reports sent/received pps and its own CPU. Usage: udp_blast SRC DST RATE SECONDS
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#define B 32
static double now_s(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec / 1e9; }
int main(int argc, char **argv) {
	int fd = socket(AF_INET, SOCK_DGRAM, 0);
	int big = 8 << 20; setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof big); setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &big, sizeof big);
	struct sockaddr_in src = { .sin_family = AF_INET, .sin_port = htons(5004) }; inet_pton(AF_INET, argv[1], &src.sin_addr);
	if (bind(fd, (void *)&src, sizeof src)) { perror("bind"); return 1; }
	double rate = atof(argv[3]), secs = atof(argv[4]);
	static char buf[B][172], rbuf[B][2048];
	struct sockaddr_in dst[B]; struct mmsghdr m[B], r[B]; struct iovec iv[B], riv[B];
	for (int i = 0; i < B; i++) {
		memset(buf[i], 0x80, 172);
		dst[i].sin_family = AF_INET; inet_pton(AF_INET, argv[2], &dst[i].sin_addr);
		iv[i].iov_base = buf[i]; iv[i].iov_len = 172;
		memset(&m[i], 0, sizeof m[i]); m[i].msg_hdr.msg_name = &dst[i]; m[i].msg_hdr.msg_namelen = sizeof dst[i];
		m[i].msg_hdr.msg_iov = &iv[i]; m[i].msg_hdr.msg_iovlen = 1;
		riv[i].iov_base = rbuf[i]; riv[i].iov_len = 2048; memset(&r[i], 0, sizeof r[i]); r[i].msg_hdr.msg_iov = &riv[i]; r[i].msg_hdr.msg_iovlen = 1;
	}
	uint64_t sent = 0, recvd = 0, seq = 0; double t0 = now_s();
	while (1) {
		double t = now_s() - t0; if (t > secs) break;
		if (rate == 0 || sent < t * rate) {
			for (int i = 0; i < B; i++) { dst[i].sin_port = htons(40000 + 2 * (seq++ % 1000)); }
			int k = sendmmsg(fd, m, B, 0); if (k > 0) sent += k;
		}
		int k = recvmmsg(fd, r, B, MSG_DONTWAIT, NULL); if (k > 0) recvd += k;
	}
	double t1 = now_s();
	for (;;) { int k = recvmmsg(fd, r, B, MSG_DONTWAIT, NULL); if (k <= 0) { if (now_s() - t1 > 0.3) break; continue; } recvd += k; }
	struct rusage ru; getrusage(RUSAGE_SELF, &ru);
	printf("udp_blast: sent %.0f pps, received %.0f pps (%.2f%% back), cpu %.0f%%\n", sent / secs, recvd / secs, 100.0 * recvd / (sent ? sent : 1),
		100 * (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6) / secs);
	return 0;
}
