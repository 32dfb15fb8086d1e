/* Cyrus SASL for Swift. */
#include <sasl/sasl.h>
#include <sasl/saslutil.h>
