/* cli.h: shared by the `prognos` command files. Each cmd_<name>() parses only
 * its own options and returns the process exit code: 0 ok, 1 failed, 2 usage
 * error, 3 nothing to do. */
#ifndef PROGNOS_CLI_H
#define PROGNOS_CLI_H

#include "engine/engine.h"
#include <cjson/cJSON.h>

enum { PX_EXIT_OK = 0, PX_EXIT_FAIL = 1, PX_EXIT_USAGE = 2, PX_EXIT_NOTHING = 3,
       PX_EXIT_GATES = 4 /* retrain: a candidate failed its quality gates, others may have been promoted */ };

int cmd_db(int argc, char **argv);
int cmd_etl(int argc, char **argv);
int cmd_generate(int argc, char **argv);
int cmd_features(int argc, char **argv);
int cmd_features_fhir(int argc, char **argv); /* `features fhir`, called by cmd_features */
int cmd_registry(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_retrain(int argc, char **argv);
int cmd_kpi(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_apikey(int argc, char **argv);
int cmd_drift(int argc, char **argv);
int cmd_export(int argc, char **argv);
int cmd_run(int argc, char **argv);
/* prognos db retention ... (cmd_retention.c); argv[0] is "retention" */
int cmd_db_retention(int argc, char **argv);
/* prognos db shards ... (cmd_shards.c); argv[0] is "shards" */
int cmd_db_shards(int argc, char **argv);

/* True when argv holds -h or --help. */
int px_cli_wants_help(int argc, char **argv);
/* Maps a library error code to an exit code, printing the error. */
int px_cli_fail(const px_err *e);
/* Prints "prognos: <msg>" and a pointer to --help; returns PX_EXIT_USAGE. */
int px_cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* --json output goes through cJSON, so a string (a path, a name) is always escaped.
 * cli_json_ok(o, added): added is the result of a cJSON_Add* call; a NULL result
 * (out of memory) marks o incomplete, so that a key is never silently missing.
 * cli_json_print prints o on one line and frees it: 0, or PX_EXIT_FAIL (with a
 * message) when it was incomplete or could not be printed. */
int cli_json_ok(int *ok, const void *added);
int cli_json_print(cJSON *o, int ok);

/* Loads the configuration into cfg, opens the log and connects to the warehouse
 * (connect.c). reads_only: a home without a warehouse is an error (PX_ESTATE with
 * a hint), never a new one. NULL with e set on failure; the caller PQfinish()es. */
PGconn *px_cli_connect(px_config *cfg, int reads_only, px_err *e);

/* Option numbers (opts.c): 0 when the whole of s is the number, -1 otherwise
 * (*v untouched). px_cli_ll: a decimal integer in lo..hi; px_cli_u64: an unsigned
 * decimal integer (no sign); px_cli_double: a finite number (the caller checks
 * its range, which may be open). */
int px_cli_ll(const char *s, long long lo, long long hi, long long *v);
int px_cli_u64(const char *s, uint64_t *v);
int px_cli_double(const char *s, double *v);

#endif
