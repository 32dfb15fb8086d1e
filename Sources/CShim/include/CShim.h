/*
 * CShim: small C wrappers for what Swift's Glibc module hides (GNU extensions, function-like
 * macros, variadic functions). Plain prototypes only; the definitions are in shim.c, which is
 * compiled with _GNU_SOURCE. Trusts its callers; validates nothing.
 */
#ifndef CSHIM_H
#define CSHIM_H

#include <stddef.h>
#include <stdint.h>
#include <spawn.h>
#include <sys/types.h>
#include <sys/socket.h>
#include <sys/epoll.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <signal.h>

/* Descriptors. */
int cshim_pipe2_cloexec(int fds[2]);
int cshim_accept4_cloexec(int fd, struct sockaddr *addr, socklen_t *len);
int cshim_socketpair_cloexec(int domain, int type, int fds[2]);

/* posix_spawn with fixed descriptor numbers. */
int cshim_spawn_addclosefrom(posix_spawn_file_actions_t *fa, int lowfd);
extern const short CSHIM_POSIX_SPAWN_SETSID;

/* Logging: syslog(3) is variadic; pass preformatted text. */
void cshim_openlog(const char *ident, int option, int facility);
void cshim_syslog(int priority, const char *text);
void cshim_closelog(void);

/* File descriptor passing (SCM_RIGHTS). */
size_t cshim_cmsg_space(size_t len);
size_t cshim_cmsg_len(size_t len);
struct cmsghdr *cshim_cmsg_firsthdr(struct msghdr *m);
unsigned char *cshim_cmsg_data(struct cmsghdr *c);

/* Process title for ps(1). */
int cshim_set_process_name(const char *name);

/* Close every descriptor from lowfd up (closefrom(3)). */
void cshim_closefrom(int lowfd);

/* Send or receive one descriptor with a one-byte payload over a UNIX socket (SCM_RIGHTS).
   cshim_recv_fd returns the descriptor (close-on-exec) or -1 with errno set. */
int cshim_send_fd(int sock, int fd);
int cshim_recv_fd(int sock);

/* Block, unblock or reset signal dispositions in one call (used around spawning). */
int cshim_sigmask_all(int block, sigset_t *old);

#include "CShimSQL.h"

#endif
