/* mcast: one IPv4 multicast datagram, for the segment tests (built static, run in the nodes).
 *
 *   mcast listen GROUP PORT IFACE       join GROUP on IFACE, then go to the background and
 *                                       print the first datagram to PORT (60 s at most)
 *   mcast send GROUP PORT IFACE TEXT    send TEXT to GROUP:PORT out of IFACE
 *
 * listen returns only once the group is joined, so a send after it is not lost to a race. */
#include <arpa/inet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int die(const char *what)
{
	perror(what);
	return 1;
}

int main(int argc, char **argv)
{
	int rx = argc == 5 && !strcmp(argv[1], "listen");
	if (!rx && !(argc == 6 && !strcmp(argv[1], "send"))) {
		fprintf(stderr, "usage: mcast listen GROUP PORT IFACE | send GROUP PORT IFACE TEXT\n");
		return 2;
	}
	struct ip_mreqn mreq = {.imr_ifindex = (int)if_nametoindex(argv[4])};
	struct sockaddr_in group = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[3]))};
	if (!mreq.imr_ifindex || inet_pton(AF_INET, argv[2], &group.sin_addr) != 1) {
		fprintf(stderr, "mcast: bad interface or group\n");
		return 2;
	}
	mreq.imr_multiaddr = group.sin_addr;
	int fd = socket(AF_INET, SOCK_DGRAM, 0);
	if (fd < 0)
		return die("socket");
	if (!rx) { /* the interface the datagram leaves by, whatever the routes say */
		if (setsockopt(fd, IPPROTO_IP, IP_MULTICAST_IF, &mreq, sizeof(mreq)) < 0)
			return die("IP_MULTICAST_IF");
		size_t n = strlen(argv[5]);
		if (sendto(fd, argv[5], n, 0, (struct sockaddr *)&group, sizeof(group)) != (ssize_t)n)
			return die("sendto");
		return 0;
	}
	/* bound to the group's address: only datagrams to that group and port arrive */
	if (bind(fd, (struct sockaddr *)&group, sizeof(group)) < 0)
		return die("bind");
	if (setsockopt(fd, IPPROTO_IP, IP_ADD_MEMBERSHIP, &mreq, sizeof(mreq)) < 0)
		return die("IP_ADD_MEMBERSHIP");
	pid_t pid = fork();
	if (pid < 0)
		return die("fork");
	if (pid > 0)
		return 0; /* joined: the caller may send now */
	alarm(60); /* nothing came: give up (SIGALRM ends the process) */
	char buf[1500];
	ssize_t n = recv(fd, buf, sizeof(buf), 0);
	if (n < 0)
		return die("recv");
	printf("%.*s\n", (int)n, buf);
	return 0;
}
