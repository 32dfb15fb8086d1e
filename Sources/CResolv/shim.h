/* The resolver library (res_query, ns_initparse, dn_expand), absent from Swift's Glibc module. */
#include <sys/types.h>
#include <netinet/in.h>
#include <arpa/nameser.h>
#include <resolv.h>
#include <netdb.h>
#include <arpa/inet.h>
static inline int cresolv_h_errno(void) { return h_errno; }
/* res_query(3) on the calling thread's resolver state, with h_errno returned beside it, and
 * the resolver's search-list options cleared first (Postfix queries names as given). */
static inline int cresolv_query(const char *name, int type, unsigned char *answer, int anslen, int *herr) {
    if ((_res.options & RES_INIT) == 0 && res_init() < 0) { *herr = NO_RECOVERY; return -1; }
    _res.options &= ~(RES_DEFNAMES | RES_DNSRCH);
    int n = res_query(name, C_IN, type, answer, anslen);
    *herr = n < 0 ? h_errno : 0;
    return n;
}
/* Points the calling thread's resolver at one IPv4 server and port (tests use a server of
 * their own on loopback). Returns -1 when the address is not IPv4 text. */
static inline int cresolv_use_server(const char *ipv4, int port) {
    struct in_addr a;
    if (inet_pton(AF_INET, ipv4, &a) != 1) return -1;
    if ((_res.options & RES_INIT) == 0 && res_init() < 0) return -1;
    _res.nscount = 1;
    _res.nsaddr_list[0].sin_family = AF_INET;
    _res.nsaddr_list[0].sin_port = htons((unsigned short) port);
    _res.nsaddr_list[0].sin_addr = a;
    _res.retry = 1;
    _res.retrans = 2;
    return 0;
}
