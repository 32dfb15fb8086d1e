/* Late binding of libsqlite3 and libpq (see CShimSQL.h). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>
#include "CShimSQL.h"

const int CSHIM_SQLITE_OK = 0, CSHIM_SQLITE_ROW = 100, CSHIM_SQLITE_DONE = 101;

static void *sqlite_lib;
static int (*p_sqlite3_open)(const char *, void **);
static const char *(*p_sqlite3_errmsg)(void *);
static int (*p_sqlite3_prepare_v2)(void *, const char *, int, void **, const char **);
static int (*p_sqlite3_step)(void *);
static const unsigned char *(*p_sqlite3_column_text)(void *, int);
static int (*p_sqlite3_finalize)(void *);
static char *(*p_sqlite3_mprintf)(const char *, ...);
static void (*p_sqlite3_free)(void *);
static int (*p_sqlite3_close)(void *);

static int bind_all(void *lib, const char **names, void ***slots, int n, char *err, size_t errlen) {
    for (int i = 0; i < n; i++) {
        *slots[i] = dlsym(lib, names[i]);
        if (*slots[i] == NULL) {
            snprintf(err, errlen, "%s", dlerror());
            return -1;
        }
    }
    return 0;
}

int cshim_sqlite_load(char *err, size_t errlen) {
    if (sqlite_lib) return 0;
    void *lib = dlopen("libsqlite3.so.0", RTLD_NOW | RTLD_LOCAL);
    if (lib == NULL) {
        snprintf(err, errlen, "%s", dlerror());
        return -1;
    }
    const char *names[] = {"sqlite3_open", "sqlite3_errmsg", "sqlite3_prepare_v2", "sqlite3_step",
                           "sqlite3_column_text", "sqlite3_finalize", "sqlite3_mprintf", "sqlite3_free",
                           "sqlite3_close"};
    void **slots[] = {(void **) &p_sqlite3_open, (void **) &p_sqlite3_errmsg, (void **) &p_sqlite3_prepare_v2,
                      (void **) &p_sqlite3_step, (void **) &p_sqlite3_column_text, (void **) &p_sqlite3_finalize,
                      (void **) &p_sqlite3_mprintf, (void **) &p_sqlite3_free, (void **) &p_sqlite3_close};
    if (bind_all(lib, names, slots, 9, err, errlen) < 0) {
        dlclose(lib);
        return -1;
    }
    sqlite_lib = lib;
    return 0;
}

int cshim_sqlite_open(const char *path, void **db) { return p_sqlite3_open(path, db); }
const char *cshim_sqlite_errmsg(void *db) { return p_sqlite3_errmsg(db); }
int cshim_sqlite_prepare(void *db, const char *sql, void **stmt, const char **tail) {
    return p_sqlite3_prepare_v2(db, sql, -1, stmt, tail);
}
int cshim_sqlite_step(void *stmt) { return p_sqlite3_step(stmt); }
const char *cshim_sqlite_column_text(void *stmt, int col) { return (const char *) p_sqlite3_column_text(stmt, col); }
int cshim_sqlite_finalize(void *stmt) { return p_sqlite3_finalize(stmt); }
char *cshim_sqlite_quote(const char *s) { return p_sqlite3_mprintf("%q", s); }
void cshim_sqlite_free(void *p) { p_sqlite3_free(p); }
void cshim_sqlite_close(void *db) { p_sqlite3_close(db); }

static void *pq_lib;
static void *(*p_PQconnectdb)(const char *);
static void *(*p_PQsetdbLogin)(const char *, const char *, const char *, const char *, const char *,
                               const char *, const char *);
static int (*p_PQstatus)(void *);
static char *(*p_PQerrorMessage)(void *);
static int (*p_PQsetClientEncoding)(void *, const char *);
static size_t (*p_PQescapeStringConn)(void *, char *, const char *, size_t, int *);
static void *(*p_PQexec)(void *, const char *);
static int (*p_PQresultStatus)(void *);
static char *(*p_PQresultErrorMessage)(void *);
static int (*p_PQntuples)(void *);
static int (*p_PQnfields)(void *);
static char *(*p_PQgetvalue)(void *, int, int);
static void (*p_PQclear)(void *);
static void (*p_PQfinish)(void *);

int cshim_pq_load(char *err, size_t errlen) {
    if (pq_lib) return 0;
    void *lib = dlopen("libpq.so.5", RTLD_NOW | RTLD_LOCAL);
    if (lib == NULL) {
        snprintf(err, errlen, "%s", dlerror());
        return -1;
    }
    const char *names[] = {"PQconnectdb", "PQsetdbLogin", "PQstatus", "PQerrorMessage", "PQsetClientEncoding",
                           "PQescapeStringConn", "PQexec", "PQresultStatus", "PQresultErrorMessage",
                           "PQntuples", "PQnfields", "PQgetvalue", "PQclear", "PQfinish"};
    void **slots[] = {(void **) &p_PQconnectdb, (void **) &p_PQsetdbLogin, (void **) &p_PQstatus,
                      (void **) &p_PQerrorMessage, (void **) &p_PQsetClientEncoding, (void **) &p_PQescapeStringConn,
                      (void **) &p_PQexec, (void **) &p_PQresultStatus, (void **) &p_PQresultErrorMessage,
                      (void **) &p_PQntuples, (void **) &p_PQnfields, (void **) &p_PQgetvalue, (void **) &p_PQclear,
                      (void **) &p_PQfinish};
    if (bind_all(lib, names, slots, 14, err, errlen) < 0) {
        dlclose(lib);
        return -1;
    }
    pq_lib = lib;
    return 0;
}

void *cshim_pq_connectdb(const char *conninfo) { return p_PQconnectdb(conninfo); }
void *cshim_pq_setdblogin(const char *host, const char *port, const char *dbname, const char *user,
                          const char *password) {
    return p_PQsetdbLogin(host, port, NULL, NULL, dbname, user, password);
}
int cshim_pq_status_ok(void *conn) { return conn != NULL && p_PQstatus(conn) == 0; }
const char *cshim_pq_error_message(void *conn) { return conn ? p_PQerrorMessage(conn) : "out of memory"; }
int cshim_pq_set_client_encoding(void *conn, const char *encoding) { return p_PQsetClientEncoding(conn, encoding); }
int cshim_pq_escape(void *conn, char *to, const char *from, size_t len) {
    int error = 0;
    p_PQescapeStringConn(conn, to, from, len, &error);
    return error;
}
void *cshim_pq_exec(void *conn, const char *query) { return p_PQexec(conn, query); }
int cshim_pq_result_status(void *res) { return res ? p_PQresultStatus(res) : -1; }
const char *cshim_pq_result_error_message(void *res) { return res ? p_PQresultErrorMessage(res) : ""; }
int cshim_pq_ntuples(void *res) { return p_PQntuples(res); }
int cshim_pq_nfields(void *res) { return p_PQnfields(res); }
const char *cshim_pq_getvalue(void *res, int row, int col) { return p_PQgetvalue(res, row, col); }
void cshim_pq_clear(void *res) { if (res) p_PQclear(res); }
void cshim_pq_finish(void *conn) { if (conn) p_PQfinish(conn); }
