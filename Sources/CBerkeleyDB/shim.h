/* Berkeley DB (the library Postfix's hash: and btree: tables use). */
#include <db.h>
