/* SQL client libraries (SQLite, PostgreSQL's libpq), loaded when first used, the way
 * Postfix loads its sqlite and pgsql plugins: programs that never use these tables do not
 * pay for them, and a missing library is an error for that table only. Handles are
 * opaque; the functions mirror the library calls of the same name. */
#ifndef CSHIM_SQL_H
#define CSHIM_SQL_H
#include <stddef.h>

/* 0 when loaded; otherwise -1 with the reason in err. */
int cshim_sqlite_load(char *err, size_t errlen);
int cshim_sqlite_open(const char *path, void **db);
const char *cshim_sqlite_errmsg(void *db);
int cshim_sqlite_prepare(void *db, const char *sql, void **stmt, const char **tail);
int cshim_sqlite_step(void *stmt);
const char *cshim_sqlite_column_text(void *stmt, int col);
int cshim_sqlite_finalize(void *stmt);
/* sqlite3_mprintf("%q", s); release with cshim_sqlite_free. */
char *cshim_sqlite_quote(const char *s);
void cshim_sqlite_free(void *p);
void cshim_sqlite_close(void *db);
extern const int CSHIM_SQLITE_OK, CSHIM_SQLITE_ROW, CSHIM_SQLITE_DONE;

int cshim_pq_load(char *err, size_t errlen);
void *cshim_pq_connectdb(const char *conninfo);
void *cshim_pq_setdblogin(const char *host, const char *port, const char *dbname,
                          const char *user, const char *password);
int cshim_pq_status_ok(void *conn);
const char *cshim_pq_error_message(void *conn);
int cshim_pq_set_client_encoding(void *conn, const char *encoding);
/* PQescapeStringConn into a buffer of 2*len+1 bytes; 0 on success. */
int cshim_pq_escape(void *conn, char *to, const char *from, size_t len);
void *cshim_pq_exec(void *conn, const char *query);
/* PGRES_* value of a result (NULL result: -1). */
int cshim_pq_result_status(void *res);
const char *cshim_pq_result_error_message(void *res);
int cshim_pq_ntuples(void *res);
int cshim_pq_nfields(void *res);
const char *cshim_pq_getvalue(void *res, int row, int col);
void cshim_pq_clear(void *res);
void cshim_pq_finish(void *conn);
#endif
