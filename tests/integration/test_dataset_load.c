/* test_dataset_load.c: px_dataset_load against a real warehouse (run by
 * features_dataset.sh with the URI of `prognos db url`, after a generated load and
 * `prognos features build`). A small table of known rows checks values, order,
 * roles, levels in byte order, COPY escapes, dropped labels and quoting; the
 * built-in readmission table checks catalog roles and values against plain
 * SELECTs of the same rows; bad names and types check the errors. */
#include "features/features.h"
#include "../unit/check.h"
#include <libpq-fe.h>
#include <stdlib.h>

static PGconn *conn;

static void exec_sql(const char *sql)
{
    PGresult *r = PQexec(conn, sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK) {
        fprintf(stderr, "setup failed: %s\n%s\n", PQresultErrorMessage(r), sql);
        exit(2);
    }
    PQclear(r);
}

static px_dataset *load(const char *table, const char *label, const char *const *features, const char *const *extra,
                        px_err *e)
{
    px_dataset_params p = px_dataset_default_params();
    p.table = table;
    p.label = label;
    p.features = features;
    p.extra = extra;
    memset(e, 0, sizeof *e);
    return px_dataset_load(conn, &p, e);
}

/* loading fails, and the message contains want */
static void expect_error(const char *table, const char *label, const char *const *features, const char *want)
{
    px_err e;
    px_dataset *d = load(table, label, features, NULL, &e);
    CHECK(d == NULL);
    if (!strstr(e.msg, want)) {
        check_failures++;
        fprintf(stderr, "error for table '%s' label '%s': got '%s', expected it to contain '%s'\n", table, label, e.msg,
                want);
    }
    check_count++;
    px_dataset_free(d);
}

static void small_table(void)
{
    /* rows in (visit, encounter_id) order after the NULL labels are dropped:
     *   k1 2020-01-01  x1 1  x2 0.5   flag t  color "b"      y 1
     *   k2 2020-01-02  x1 2  x2 NULL  flag f  color "B"      y 0
     *   k4 2020-01-02  x1 4  x2 -2.25 flag t  color "a\tb"   y 1   (tab inside)
     *   k5 2020-01-03  x1 NULL x2 1e6 flag NULL color "é"    y 0
     *   k6 2020-01-03  x1 6  x2 3     flag f  color NULL     y 2.5
     * k3 and k7 have a NULL label. */
    exec_sql("DROP SCHEMA IF EXISTS t CASCADE; CREATE SCHEMA t;"
             "CREATE TABLE t.small (encounter_id uuid, patient_id uuid, visit date, x1 integer, x2 numeric(10,3),"
             " flag boolean, color text, sex char(1), age_years smallint, y double precision, note text, other uuid);"
             "INSERT INTO t.small VALUES"
             " ('00000000-0000-0000-0000-000000000006', '10000000-0000-0000-0000-00000000000b', '2020-01-03', 6, 3, false, NULL, 'M', 70, 2.5, 'six', NULL),"
             " ('00000000-0000-0000-0000-000000000001', 'a0000000-0000-0001-0000-00000000000a', '2020-01-01', 1, 0.5, true, 'b', 'F', 40, 1, E'line\\nbreak', NULL),"
             " ('00000000-0000-0000-0000-000000000003', 'a0000000-0000-0001-0000-00000000000a', '2020-01-01', 3, 9, true, 'z', 'F', 40, NULL, 'dropped', NULL),"
             " ('00000000-0000-0000-0000-000000000004', 'a0000000-0000-0001-0000-00000000000a', '2020-01-02', 4, -2.25, true, E'a\\tb', 'F', 41, 1, E'back\\\\slash', NULL),"
             " ('00000000-0000-0000-0000-000000000002', '10000000-0000-0000-0000-00000000000b', '2020-01-02', 2, NULL, false, 'B', 'M', 69, 0, NULL, NULL),"
             " ('00000000-0000-0000-0000-000000000007', '10000000-0000-0000-0000-00000000000b', '2020-01-09', 7, 7, false, 'q', 'M', 70, NULL, 'dropped', NULL),"
             " ('00000000-0000-0000-0000-000000000005', NULL, '2020-01-03', NULL, 1000000, NULL, 'é', 'U', NULL, 0, 'five', NULL);"
             "CREATE VIEW t.small_view AS SELECT * FROM t.small;"
             "CREATE TABLE t.\"Odd Name\" (\"Weird Col\" integer, \"y\" integer, \"a\"\"quote\" text);"
             "INSERT INTO t.\"Odd Name\" VALUES (1, 0, 'x'), (2, 1, 'y'), (3, 1, 'x');"
             "CREATE TABLE t.textlabel (y text, x integer); INSERT INTO t.textlabel VALUES ('1', 1);"
             "CREATE TABLE t.levels (y integer, c text); INSERT INTO t.levels SELECT 0, 'v' || g FROM generate_series(1, 300) g;");

    px_err e;
    const char *extra[] = {"note", NULL};
    for (int view = 0; view < 2; view++) {
        px_dataset *d = load(view ? "t.small_view" : "t.small", "y", NULL, extra, &e);
        CHECK(d != NULL);
        if (!d) {
            fprintf(stderr, "load failed: %s (%s)\n", e.msg, e.detail);
            return;
        }
        CHECK_INT(d->n, 5);
        CHECK_INT(d->dropped_missing_label, 2);
        /* inferred roles: the uuids are key / group / key, visit the time (no discharge_date or admission_date:
         * none by name, so no time), numbers and text are features */
        CHECK_STR(d->time_col, "");
        CHECK_STR(d->table, view ? "t.small_view" : "t.small");
        CHECK_STR(d->definition_hash, "");
        CHECK_INT(d->p, 7); /* x1 x2 flag color sex age_years note */
        int x1 = px_dataset_col(d, "x1"), x2 = px_dataset_col(d, "x2"), flag = px_dataset_col(d, "flag"),
            color = px_dataset_col(d, "color");
        CHECK(x1 >= 0 && x2 >= 0 && flag >= 0 && color >= 0);
        CHECK(px_dataset_col(d, "encounter_id") < 0 && px_dataset_col(d, "patient_id") < 0 &&
              px_dataset_col(d, "other") < 0 && px_dataset_col(d, "visit") < 0 && px_dataset_col(d, "y") < 0);
        CHECK_INT(d->kind[x1], PX_COL_NUMERIC);
        CHECK_INT(d->kind[flag], PX_COL_NUMERIC);
        CHECK_INT(d->kind[color], PX_COL_CATEGORICAL);
        /* byte order: "B" < "a\tb" < "b" < "é" */
        CHECK_INT(d->nlevels[color], 4);
        if (d->nlevels[color] == 4) {
            CHECK_STR(d->levels[color][0], "B");
            CHECK_STR(d->levels[color][1], "a\tb");
            CHECK_STR(d->levels[color][2], "b");
            CHECK_STR(d->levels[color][3], "\xc3\xa9");
        }
        CHECK_INT(d->nlevels[x1], 0);
        /* no time: ordered by the key (encounter_id) */
        double want_x1[] = {1, 2, 4, NAN, 6}, want_y[] = {1, 0, 1, 0, 2.5}, want_col[] = {2, 0, 1, 3, NAN};
        double want_x2[] = {0.5, NAN, -2.25, 1e6, 3}, want_flag[] = {1, 0, 1, NAN, 0};
        for (size_t i = 0; i < 5 && d->n == 5; i++) {
            double *row = &d->x[i * d->p];
            CHECK(isnan(want_x1[i]) ? isnan(row[x1]) : row[x1] == want_x1[i]);
            CHECK(isnan(want_x2[i]) ? isnan(row[x2]) : row[x2] == want_x2[i]);
            CHECK(isnan(want_flag[i]) ? isnan(row[flag]) : row[flag] == want_flag[i]);
            CHECK(isnan(want_col[i]) ? isnan(row[color]) : row[color] == want_col[i]);
            CHECK(d->y[i] == want_y[i]);
            CHECK_INT(d->day[i], 0);
        }
        if (d->n == 5) {
            CHECK(d->group[0] == 0xa000000000000001ULL);
            CHECK(d->group[1] == 0x1000000000000000ULL);
            CHECK(d->group[3] == 0);
            CHECK(d->sex[0] == 'F' && d->sex[1] == 'M' && d->sex[3] == 'U');
            CHECK(d->age[0] == 40 && d->age[2] == 41 && isnan(d->age[3]));
            CHECK_INT(d->nextra, 1);
            CHECK_STR(d->extra_names[0], "note");
            CHECK_STR(d->extra[0], "line\nbreak");
            CHECK(d->extra[1] == NULL);
            CHECK_STR(d->extra[2], "back\\slash");
            CHECK_STR(d->extra[3], "five");
        }
        CHECK(strlen(d->fingerprint) == 64);
        px_dataset_free(d);
    }

    /* an explicit time column orders by (time, key); explicit features in their order */
    px_dataset_params p = px_dataset_default_params();
    const char *feats[] = {"color", "x1", NULL};
    p.table = "t.small";
    p.label = "y";
    p.time_col = "visit";
    p.features = feats;
    memset(&e, 0, sizeof e);
    px_dataset *d = px_dataset_load(conn, &p, &e);
    CHECK(d != NULL);
    if (d) {
        CHECK_INT(d->p, 2);
        CHECK_STR(d->names[0], "color");
        CHECK_STR(d->names[1], "x1");
        CHECK_STR(d->time_col, "visit");
        /* 2020-01-01 = day 18262 */
        int32_t want_day[] = {18262, 18263, 18263, 18264, 18264};
        double want_x1[] = {1, 2, 4, NAN, 6};
        for (size_t i = 0; i < 5 && d->n == 5; i++) {
            CHECK_INT(d->day[i], want_day[i]);
            CHECK(isnan(want_x1[i]) ? isnan(d->x[i * 2 + 1]) : d->x[i * 2 + 1] == want_x1[i]);
        }
        /* same data, same fingerprint; other columns, another one */
        px_dataset *d2 = px_dataset_load(conn, &p, &e);
        CHECK(d2 && strcmp(d2->fingerprint, d->fingerprint) == 0);
        px_dataset_free(d2);
        const char *feats2[] = {"x1", "color", NULL};
        p.features = feats2;
        d2 = px_dataset_load(conn, &p, &e);
        CHECK(d2 && strcmp(d2->fingerprint, d->fingerprint) != 0);
        px_dataset_free(d2);
        px_dataset_free(d);
    }

    /* order: NULL times last; integer keys numerically; text keys by bytes */
    exec_sql("CREATE TABLE t.nulltime (encounter_id uuid, visit date, y integer);"
             "INSERT INTO t.nulltime VALUES ('00000000-0000-0000-0000-000000000002', NULL, 0),"
             " ('00000000-0000-0000-0000-000000000001', '2020-01-02', 1), ('00000000-0000-0000-0000-000000000003', '2020-01-01', 2);"
             "CREATE TABLE t.intkey (encounter_id integer, y integer, x integer);"
             "INSERT INTO t.intkey VALUES (10, 0, 3), (9, 0, 2), (-1, 0, 1);"
             "CREATE TABLE t.textkey (encounter_id text, y integer, x integer);"
             "INSERT INTO t.textkey VALUES ('b', 0, 3), ('B', 0, 1), ('a', 0, 2);");
    px_dataset_params tp = px_dataset_default_params();
    tp.table = "t.nulltime";
    tp.label = "y";
    tp.time_col = "visit";
    d = px_dataset_load(conn, &tp, &e);
    CHECK(d && d->n == 3);
    if (d && d->n == 3) {
        CHECK(d->y[0] == 2 && d->y[1] == 1 && d->y[2] == 0);
        CHECK(d->day[0] == 18262 && d->day[1] == 18263 && d->day[2] == 0);
    }
    px_dataset_free(d);
    for (int t = 0; t < 2; t++) {
        d = load(t ? "t.textkey" : "t.intkey", "y", NULL, NULL, &e);
        CHECK(d && d->n == 3 && d->p == 1);
        if (d && d->n == 3 && d->p == 1) CHECK(d->x[0] == 1 && d->x[1] == 2 && d->x[2] == 3);
        px_dataset_free(d);
    }

    /* quoted identifiers */
    const char *odd[] = {"Weird Col", "a\"quote", NULL};
    d = load("t.Odd Name", "y", odd, NULL, &e);
    CHECK(d != NULL);
    if (d) {
        CHECK_INT(d->n, 3);
        CHECK_INT(d->nlevels[1], 2);
        CHECK(d->x[0] == 1 && d->x[2] == 2 && d->x[4] == 3);
        px_dataset_free(d);
    } else {
        fprintf(stderr, "odd name: %s (%s)\n", e.msg, e.detail);
    }

    /* errors */
    expect_error("t.nosuch", "y", NULL, "table 't.nosuch' does not exist");
    expect_error("nosuch.small", "y", NULL, "table 'nosuch.small' does not exist");
    expect_error("t.small\"; DROP TABLE t.small; --", "y", NULL, "does not exist");
    expect_error("t.small", "nolabel", NULL, "label 'nolabel' is not in table 't.small'");
    expect_error("t.small", "color", NULL, "label 'color' is not numeric");
    expect_error("t.textlabel", "y", NULL, "label 'y' is not numeric");
    const char *bad1[] = {"x1", "nosuch", NULL};
    expect_error("t.small", "y", bad1, "column 'nosuch' is not in table 't.small'");
    const char *bad2[] = {"encounter_id", NULL};
    expect_error("t.small", "y", bad2, "column 'encounter_id' is the key of 't.small' and cannot be a feature");
    const char *bad3[] = {"patient_id", NULL};
    expect_error("t.small", "y", bad3, "is the group of 't.small'");
    const char *bad4[] = {"y", NULL};
    expect_error("t.small", "y", bad4, "is the label of 't.small'");
    const char *bad5[] = {"visit", NULL};
    expect_error("t.small", "y", bad5, "has type date");
    expect_error("t.levels", "y", NULL, "column 'c' of 't.levels' has more than 200 distinct values");
    px_dataset_params lp = px_dataset_default_params();
    lp.table = "t.levels";
    lp.label = "y";
    lp.max_levels = 300;
    d = px_dataset_load(conn, &lp, &e);
    CHECK(d && d->nlevels[0] == 300 && strcmp(d->levels[0][0], "v1") == 0 && strcmp(d->levels[0][1], "v10") == 0);
    px_dataset_free(d);
    CHECK(PQtransactionStatus(conn) == PQTRANS_IDLE);
    CHECK(PQstatus(conn) == CONNECTION_OK);
}

/* The built-in readmission table: roles from the catalog, values equal to plain SELECTs. */
static void builtin_table(void)
{
    px_err e;
    const px_feat_set_info *s = px_feat_set_find("readmission");
    CHECK(s != NULL);
    if (!s) return;
    px_dataset *d = load(s->table, s->label, NULL, NULL, &e);
    CHECK(d != NULL);
    if (!d) {
        fprintf(stderr, "readmission: %s (%s)\n", e.msg, e.detail);
        return;
    }
    PGresult *r = PQexec(conn,
                         "SELECT count(*), sum(readmit_30d),"
                         " (SELECT count(*) FROM features.catalog c, jsonb_array_elements(c.columns) x"
                         "   WHERE c.build_id = (SELECT max(build_id) FROM features.catalog WHERE set_name = 'readmission')"
                         "   AND x->>'role' = 'feature'),"
                         " (SELECT definition_hash FROM features.catalog WHERE set_name = 'readmission' ORDER BY build_id DESC LIMIT 1),"
                         " (SELECT count(DISTINCT discharge_disposition) FROM features.readmission)"
                         " FROM features.readmission");
    CHECK(PQresultStatus(r) == PGRES_TUPLES_OK);
    CHECK_INT(d->n, atoll(PQgetvalue(r, 0, 0)));
    CHECK_INT(d->dropped_missing_label, 0);
    double pos = 0;
    for (size_t i = 0; i < d->n; i++) pos += d->y[i];
    CHECK_NEAR(pos, atof(PQgetvalue(r, 0, 1)), 0);
    CHECK_INT(d->p, atoll(PQgetvalue(r, 0, 2)));
    CHECK_STR(d->definition_hash, PQgetvalue(r, 0, 3));
    CHECK_STR(d->time_col, "discharge_date");
    int disp = px_dataset_col(d, "discharge_disposition");
    CHECK(disp >= 0 && d->kind[disp] == PX_COL_CATEGORICAL);
    if (disp >= 0) CHECK_INT(d->nlevels[disp], atoll(PQgetvalue(r, 0, 4)));
    PQclear(r);
    /* roles: info, key, group, time and label columns are not features */
    const char *not_features[] = {"encounter_id", "patient_id", "facility_id", "department", "admission_date",
                                  "discharge_date", "sex", "readmit_30d", "days_to_readmission",
                                  "died_30d_after_discharge", NULL};
    for (int k = 0; not_features[k]; k++) CHECK(px_dataset_col(d, not_features[k]) < 0);
    const char *features[] = {"age_years", "female", "cci_chf", "elix_depression", "charlson_index", "lace_score",
                              "los_days", "admission_source", "cc_esrd", NULL};
    for (int k = 0; features[k]; k++) CHECK(px_dataset_col(d, features[k]) >= 0);

    /* rows 0, 1, n/2 and n-1 against plain SELECTs in (discharge_date, encounter_id) order */
    size_t rows[] = {0, 1, d->n / 2, d->n - 1};
    const char *cols[] = {"age_years", "female", "cci_chf", "charlson_index", "lace_score", "los_days", "prior_adm_12m", NULL};
    for (int k = 0; k < 4; k++) {
        char q[1024];
        snprintf(q, sizeof q,
                 "SELECT age_years, female, cci_chf, charlson_index, lace_score, los_days, prior_adm_12m,"
                 " readmit_30d, discharge_date - DATE '1970-01-01', sex, admission_source, replace(patient_id::text, '-', '')"
                 " FROM features.readmission ORDER BY discharge_date, encounter_id OFFSET %zu LIMIT 1",
                 rows[k]);
        r = PQexec(conn, q);
        CHECK(PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1);
        if (PQntuples(r) == 1) {
            const double *x = &d->x[rows[k] * d->p];
            for (int c = 0; cols[c]; c++) CHECK_NEAR(x[px_dataset_col(d, cols[c])], atof(PQgetvalue(r, 0, c)), 0);
            CHECK_NEAR(d->y[rows[k]], atof(PQgetvalue(r, 0, 7)), 0);
            CHECK_INT(d->day[rows[k]], atoll(PQgetvalue(r, 0, 8)));
            CHECK(d->sex[rows[k]] == PQgetvalue(r, 0, 9)[0]);
            CHECK_NEAR(d->age[rows[k]], atof(PQgetvalue(r, 0, 0)), 0);
            int src = px_dataset_col(d, "admission_source");
            CHECK_STR(d->levels[src][(size_t)x[src]], PQgetvalue(r, 0, 10));
            char hex[17];
            snprintf(hex, sizeof hex, "%016llx", (unsigned long long)d->group[rows[k]]);
            CHECK(strncmp(hex, PQgetvalue(r, 0, 11), 16) == 0);
        }
        PQclear(r);
    }
    px_dataset_free(d);

    /* an info column may be requested explicitly; a date or label may not */
    const char *with_fac[] = {"age_years", "facility_id", NULL};
    d = load(s->table, s->label, with_fac, NULL, &e);
    CHECK(d && d->p == 2 && d->kind[1] == PX_COL_CATEGORICAL && d->nlevels[1] > 1);
    px_dataset_free(d);
    const char *bad[] = {"discharge_date", NULL};
    expect_error(s->table, s->label, bad, "is the time of 'features.readmission'");
    const char *bad2[] = {"readmit_30d", NULL};
    expect_error("features.los", "los_days", bad2, "is not in table 'features.los'");
}

/* px_feat_build through the API: unchanged after the script's build, refused inside a
 * transaction, an unknown set named. */
static void build_api(void)
{
    px_feat_build_result r;
    px_err e = {0};
    CHECK_INT(px_feat_build(conn, "mortality", &r, &e), 0);
    CHECK_INT(r.unchanged, 1);
    CHECK(r.rows > 0 && r.build_id > 0 && strlen(r.def_hash) == 64);
    PGresult *q = PQexec(conn, "SELECT count(*) FROM features.mortality");
    CHECK(PQresultStatus(q) == PGRES_TUPLES_OK && atoll(PQgetvalue(q, 0, 0)) == r.rows);
    PQclear(q);
    exec_sql("BEGIN");
    memset(&e, 0, sizeof e);
    CHECK_INT(px_feat_build(conn, "mortality", &r, &e), PX_ESTATE);
    CHECK(strstr(e.msg, "inside an open transaction") != NULL);
    exec_sql("ROLLBACK");
    memset(&e, 0, sizeof e);
    CHECK_INT(px_feat_build(conn, "nosuch", &r, &e), PX_EINVAL);
    CHECK_STR(e.msg, "unknown feature set 'nosuch' (readmission, mortality or los)");
    CHECK(px_feat_set_find("los") == &px_feat_sets[2] && px_feat_set_find("LOS") == NULL && px_feat_sets_count == 3);
    for (int k = 0; k < px_feat_sets_count; k++) {
        int n = 0;
        while (px_feat_sets[k].default_features[n]) n++;
        CHECK(n >= 20 && n <= 30);
        CHECK(px_feat_sets[k].doc && strlen(px_feat_sets[k].doc) > 100);
    }
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: test_dataset_load URI\n");
        return 2;
    }
    conn = PQconnectdb(argv[1]);
    if (PQstatus(conn) != CONNECTION_OK) {
        fprintf(stderr, "cannot connect: %s", PQerrorMessage(conn));
        return 2;
    }
    exec_sql("SET client_min_messages = warning");
    small_table();
    builtin_table();
    build_api();
    PQfinish(conn);
    return check_report("test_dataset_load");
}
