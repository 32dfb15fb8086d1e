/* OpenSSL for Swift: the headers, plus inline wrappers for macros Swift cannot import. */
#include <openssl/ssl.h>
#include <openssl/err.h>
#include <openssl/crypto.h>
#include <openssl/x509.h>
#include <openssl/evp.h>
static inline uint64_t cssl_op_no_sslv3(void) { return SSL_OP_NO_SSLv3; }
static inline uint64_t cssl_op_no_compression(void) { return SSL_OP_NO_COMPRESSION; }
static inline long cssl_set_tlsext_host_name(SSL *s, const char *n) { return SSL_set_tlsext_host_name(s, n); }
static inline long cssl_ctx_set_min_proto_version(SSL_CTX *c, int v) { return SSL_CTX_set_min_proto_version(c, v); }
