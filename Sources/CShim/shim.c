/* Definitions for CShim.h; see there. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <unistd.h>
#include <spawn.h>
#include <syslog.h>
#include <sys/socket.h>
#include <sys/prctl.h>
#include "CShim.h"

int cshim_pipe2_cloexec(int fds[2]) { return pipe2(fds, O_CLOEXEC); }

int cshim_accept4_cloexec(int fd, struct sockaddr *addr, socklen_t *len) {
    return accept4(fd, addr, len, SOCK_CLOEXEC);
}

int cshim_socketpair_cloexec(int domain, int type, int fds[2]) {
    return socketpair(domain, type | SOCK_CLOEXEC, 0, fds);
}

int cshim_spawn_addclosefrom(posix_spawn_file_actions_t *fa, int lowfd) {
    return posix_spawn_file_actions_addclosefrom_np(fa, lowfd);
}

const short CSHIM_POSIX_SPAWN_SETSID = POSIX_SPAWN_SETSID;

void cshim_openlog(const char *ident, int option, int facility) { openlog(ident, option, facility); }
void cshim_syslog(int priority, const char *text) { syslog(priority, "%s", text); }
void cshim_closelog(void) { closelog(); }

size_t cshim_cmsg_space(size_t len) { return CMSG_SPACE(len); }
size_t cshim_cmsg_len(size_t len) { return CMSG_LEN(len); }
struct cmsghdr *cshim_cmsg_firsthdr(struct msghdr *m) { return CMSG_FIRSTHDR(m); }
unsigned char *cshim_cmsg_data(struct cmsghdr *c) { return CMSG_DATA(c); }

int cshim_set_process_name(const char *name) { return prctl(PR_SET_NAME, name, 0, 0, 0); }
