/* Definitions for CShim.h; see there. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <unistd.h>
#include <spawn.h>
#include <syslog.h>
#include <sys/socket.h>
#include <sys/prctl.h>
#include <errno.h>
#include <string.h>
#include <signal.h>
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

void cshim_closefrom(int lowfd) { closefrom(lowfd); }

int cshim_send_fd(int sock, int fd) {
    struct msghdr msg;
    struct iovec iov;
    char byte = 0;
    union { struct cmsghdr align; char buf[CMSG_SPACE(sizeof(int))]; } control;
    struct cmsghdr *c;

    memset(&msg, 0, sizeof(msg));
    memset(&control, 0, sizeof(control));
    iov.iov_base = &byte;
    iov.iov_len = 1;
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.buf;
    msg.msg_controllen = sizeof(control.buf);
    c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &fd, sizeof(int));
    for (;;) {
        ssize_t n = sendmsg(sock, &msg, MSG_NOSIGNAL);
        if (n >= 0) return 0;
        if (errno != EINTR) return -1;
    }
}

int cshim_recv_fd(int sock) {
    struct msghdr msg;
    struct iovec iov;
    char byte;
    union { struct cmsghdr align; char buf[CMSG_SPACE(sizeof(int))]; } control;
    struct cmsghdr *c;
    int fd = -1;
    ssize_t n;

    memset(&msg, 0, sizeof(msg));
    iov.iov_base = &byte;
    iov.iov_len = 1;
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.buf;
    msg.msg_controllen = sizeof(control.buf);
    do {
        n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
    } while (n < 0 && errno == EINTR);
    if (n < 0) return -1;
    if (n == 0) { errno = ECONNRESET; return -1; }
    for (c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS && c->cmsg_len == CMSG_LEN(sizeof(int))) {
            memcpy(&fd, CMSG_DATA(c), sizeof(int));
            return fd;
        }
    }
    errno = EBADMSG;
    return -1;
}

int cshim_sigmask_all(int block, sigset_t *old) {
    sigset_t all;
    sigfillset(&all);
    return sigprocmask(block ? SIG_BLOCK : SIG_SETMASK, block ? &all : old, block ? old : 0);
}
