/*
 * LD_PRELOAD shim for trafgen (netsniff-ng 0.6.x), built and used by
 * run.sh for the small-packet loads only.
 *
 * Why: trafgen kicks its TX ring with sendto(fd, NULL, 0, MSG_DONTWAIT)
 * and exits ("Flushing TX_RING failed: Resource temporarily unavailable")
 * on EAGAIN. On veth every frame stays charged to trafgen's socket until
 * it is freed wherever it ends (a real server's namespace, here), so once
 * more than ~270 frames (the default 208 KiB send buffer) are queued
 * anywhere on the path, the kick returns EAGAIN and the generator dies a
 * fraction of a second into its 5 s load. That was the "slow mode" of
 * earlier runs: it hit the kernel baselines (their frames travel the whole
 * path under trafgen's socket) far more often than rvs (which frees each
 * received frame at once and sends its own).
 *
 * What it does: gives each AF_PACKET socket a 16 MiB send buffer
 * (SO_SNDBUFFORCE; trafgen's own --no-sock-mem keeps it away from the
 * machine-wide wmem sysctls, which are not per namespace), and turns the
 * kick's EAGAIN into "sent nothing, try again", as a full ring already is.
 * The number of such retries is printed at exit.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/types.h>

static unsigned long refused;

int socket(int domain, int type, int protocol)
{
	static int (*real)(int, int, int);
	int fd, size = 16 << 20;

	if (!real)
		real = (int (*)(int, int, int))dlsym(RTLD_NEXT, "socket");
	if (!real) {
		errno = ENOSYS;
		return -1;
	}
	fd = real(domain, type, protocol);
	if (fd >= 0 && domain == AF_PACKET &&
	    setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &size, sizeof(size)) != 0)
		perror("trafgen shim: SO_SNDBUFFORCE");
	return fd;
}

ssize_t sendto(int fd, const void *buf, size_t len, int flags,
	       const struct sockaddr *addr, socklen_t addrlen)
{
	static ssize_t (*real)(int, const void *, size_t, int,
			       const struct sockaddr *, socklen_t);
	ssize_t n;

	if (!real)
		real = (ssize_t (*)(int, const void *, size_t, int,
				    const struct sockaddr *, socklen_t))
			dlsym(RTLD_NEXT, "sendto");
	if (!real) {
		errno = ENOSYS;
		return -1;
	}
	n = real(fd, buf, len, flags, addr, addrlen);
	if (n < 0 && errno == EAGAIN && buf == NULL && len == 0) {
		refused++;
		return 0;
	}
	return n;
}

__attribute__((destructor)) static void report(void)
{
	if (refused)
		fprintf(stderr, "trafgen shim: %lu ring kicks refused (EAGAIN), retried\n", refused);
}
