// udp_reflect: the least a kernel-socket packet path can do: 1000 UDP sockets (ports
// 40000-41998, even) under epoll, recvmmsg then sendmmsg back to each source, 32 a call. No crypto.
// Usage: udp_reflect IP SECONDS
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#define B 32
#define NP 1000
static double now_s(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec / 1e9; }
int main(int argc, char **argv) {
	double secs = atof(argv[2]); int ep = epoll_create1(0); int fds[NP];
	for (int i = 0; i < NP; i++) {
		fds[i] = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
		int big = 4 << 20; setsockopt(fds[i], SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof big);
		struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(40000 + 2 * i) }; inet_pton(AF_INET, argv[1], &a.sin_addr);
		if (bind(fds[i], (void *)&a, sizeof a)) { perror("bind"); return 1; }
		struct epoll_event e = { .events = EPOLLIN, .data.u32 = i }; epoll_ctl(ep, EPOLL_CTL_ADD, fds[i], &e);
	}
	static char buf[B][2048]; struct sockaddr_in from[B]; struct mmsghdr m[B]; struct iovec iv[B];
	uint64_t n = 0, nstart = 0; double t0 = now_s(), ts = 0; struct rusage r0;
	while (1) {
		struct epoll_event ev[64]; int k = epoll_wait(ep, ev, 64, 1);
		for (int j = 0; j < k; j++) {
			int fd = fds[ev[j].data.u32];
			for (int i = 0; i < B; i++) { iv[i].iov_base = buf[i]; iv[i].iov_len = 2048; memset(&m[i].msg_hdr, 0, sizeof m[i].msg_hdr);
				m[i].msg_hdr.msg_name = &from[i]; m[i].msg_hdr.msg_namelen = sizeof from[i]; m[i].msg_hdr.msg_iov = &iv[i]; m[i].msg_hdr.msg_iovlen = 1; }
			int got = recvmmsg(fd, m, B, MSG_DONTWAIT, NULL); if (got <= 0) continue;
			for (int i = 0; i < got; i++) iv[i].iov_len = m[i].msg_len;
			sendmmsg(fd, m, got, 0); n += got;
		}
		double t = now_s();
		if (!ts && t - t0 > 1.0) { ts = t; nstart = n; getrusage(RUSAGE_SELF, &r0); }
		if (ts && t - ts > secs) break;
	}
	struct rusage r1; getrusage(RUSAGE_SELF, &r1); double el = now_s() - ts;
	double cpu = (r1.ru_utime.tv_sec - r0.ru_utime.tv_sec) + (r1.ru_utime.tv_usec - r0.ru_utime.tv_usec) / 1e6 + (r1.ru_stime.tv_sec - r0.ru_stime.tv_sec) + (r1.ru_stime.tv_usec - r0.ru_stime.tv_usec) / 1e6;
	printf("udp_reflect: %.0f pps reflected over %.1f s, own cpu %.1f%% (%.0f ns/pkt)\n", (n - nstart) / el, el, 100 * cpu / el, cpu / (n - nstart + 1) * 1e9);
	return 0;
}
