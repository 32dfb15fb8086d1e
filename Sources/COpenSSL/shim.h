/* OpenSSL for Swift: the headers, plus inline wrappers for macros Swift cannot import. */
#include <openssl/ssl.h>
#include <openssl/err.h>
#include <openssl/crypto.h>
#include <openssl/x509.h>
#include <openssl/evp.h>
#include <openssl/x509v3.h>
#include <openssl/rand.h>
#include <openssl/params.h>
#include <openssl/core_names.h>
static inline uint64_t cssl_op_no_sslv3(void) { return SSL_OP_NO_SSLv3; }
static inline uint64_t cssl_op_no_compression(void) { return SSL_OP_NO_COMPRESSION; }
static inline long cssl_set_tlsext_host_name(SSL *s, const char *n) { return SSL_set_tlsext_host_name(s, n); }
static inline long cssl_ctx_set_min_proto_version(SSL_CTX *c, int v) { return SSL_CTX_set_min_proto_version(c, v); }
static inline long cssl_ctx_set_max_proto_version(SSL_CTX *c, int v) { return SSL_CTX_set_max_proto_version(c, v); }
static inline uint64_t cssl_op_no_tlsv1(void) { return SSL_OP_NO_TLSv1; }
static inline uint64_t cssl_op_no_tlsv1_1(void) { return SSL_OP_NO_TLSv1_1; }
static inline uint64_t cssl_op_no_tlsv1_2(void) { return SSL_OP_NO_TLSv1_2; }
static inline uint64_t cssl_op_no_tlsv1_3(void) { return SSL_OP_NO_TLSv1_3; }
static inline uint64_t cssl_op_cipher_server_preference(void) { return SSL_OP_CIPHER_SERVER_PREFERENCE; }
static inline long cssl_get_negotiated_group(SSL *s) { return SSL_get_negotiated_group(s); }
static inline long cssl_get_signature_nid(SSL *s, int *nid) { return SSL_get_signature_nid(s, nid); }
static inline long cssl_ctx_set_session_cache_mode(SSL_CTX *c, long m) { return SSL_CTX_set_session_cache_mode(c, m); }
static inline long cssl_get_peer_signature_nid(SSL *s, int *nid) { return SSL_get_peer_signature_nid(s, nid); }
static inline uint64_t cssl_op_no_ticket(void) { return SSL_OP_NO_TICKET; }
