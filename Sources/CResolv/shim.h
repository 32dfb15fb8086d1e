/* The resolver library (res_query, ns_initparse, dn_expand), absent from Swift's Glibc module. */
#include <sys/types.h>
#include <netinet/in.h>
#include <arpa/nameser.h>
#include <resolv.h>
#include <netdb.h>
static inline int cresolv_h_errno(void) { return h_errno; }
