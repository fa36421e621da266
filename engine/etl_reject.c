/* etl_reject.c: rejected rows and field warnings of a batch: spooled as COPY
 * text while a file is read, flushed into etl.rejects and etl.warnings (checked
 * against the server's counts), and summarized by reason for the reject-rate
 * rule. Calls the COPY writer (etl_copy.c) and the key parser (etl_hash.c). */
#include "engine/etl_int.h"
#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* ---- rejects ------------------------------------------------------------------- */

void etl_reject(etl_ctx *x, long long line, const char *reason, const char *field, const char *detail,
                const char *row_json)
{
    px_buf b = {0};
    px_buf_printf(&b, "%lld\t", x->batch);
    px_buf_copy_field(&b, x->in->name, strlen(x->in->name));
    px_buf_printf(&b, "\t%lld\t%s\t", line, reason);
    if (field) px_buf_copy_field(&b, field, strlen(field));
    else px_buf_copy_field(&b, NULL, 0);
    px_buf_addc(&b, '\t');
    px_buf_copy_field(&b, detail, strlen(detail));
    px_buf_addc(&b, '\t');
    if (row_json) px_buf_copy_field(&b, row_json, strlen(row_json));
    else px_buf_copy_field(&b, NULL, 0);
    px_buf_addc(&b, '\n');
    fwrite(b.data, 1, b.len, x->rej);
    px_buf_release(&b);
    x->rejected++;
    x->rej_spooled++;
}

size_t etl_utf8_cut(const char *s, size_t len, size_t max)
{
    if (len <= max) return len;
    while (max > 0 && ((unsigned char)s[max] & 0xC0) == 0x80) max--;
    return max;
}

const char *etl_csv_reason(px_csv_status st)
{
    switch (st) {
    case PX_CSV_BAD_QUOTING: return "csv_quoting";
    case PX_CSV_BAD_UTF8: return "csv_utf8";
    case PX_CSV_TOO_LONG: return "csv_too_long";
    default: return "csv_column_count";
    }
}

void etl_future_detail(const etl_ctx *x, const char *col, char *buf, size_t len)
{
    char ref[11];
    px_date_format(x->today, ref);
    snprintf(buf, len, "'%s' is after the reference date %s (%s); for extracts whose dates are shifted, "
             "load with --future-dates allow", col, ref, x->p->today ? "--as-of" : "today, or --as-of");
}

void etl_warn(etl_ctx *x, long long line, const char *reason, const char *field, const char *detail)
{
    px_buf b = {0};
    px_buf_printf(&b, "%lld\t", x->batch);
    px_buf_copy_field(&b, x->in->name, strlen(x->in->name));
    px_buf_printf(&b, "\t%lld\t%s\t", line, reason);
    px_buf_copy_field(&b, field, strlen(field));
    px_buf_addc(&b, '\t');
    px_buf_copy_field(&b, detail, strlen(detail));
    px_buf_addc(&b, '\n');
    fwrite(b.data, 1, b.len, x->warn);
    px_buf_release(&b);
    x->warn_spooled++;
}

int etl_rejects_flush(etl_ctx *x)
{
    long long nrej = 0, nwarn = 0;
    if (ferror(x->rej) || ferror(x->warn))
        return px_err_set(x->e, PX_EIO, "cannot write the reject spool of '%s'", x->in->name);
    int rc = etl_copy_spool(x, x->rej,
                            "COPY etl.rejects (batch_id, file_name, line, reason, field, detail, row_data) FROM STDIN",
                            &nrej);
    if (rc == 0)
        rc = etl_copy_spool(x, x->warn, "COPY etl.warnings (batch_id, file_name, line, reason, field, detail) FROM STDIN",
                            &nwarn);
    if (rc == 0 && (nrej != x->rej_spooled || nwarn != x->warn_spooled))
        rc = px_err_set(x->e, PX_ESTATE, "the server stored %lld rejects and %lld warnings of '%s', prognos spooled "
                        "%lld and %lld", nrej, nwarn, x->in->name, x->rej_spooled, x->warn_spooled);
    x->rej_spooled = x->warn_spooled = 0;
    return rc;
}

int etl_mark_rejected_encounters(etl_ctx *x)
{
    PGresult *r = etl_exec(x, "SELECT row_data->>'encounter_id', reason = 'duplicate_key' FROM etl.rejects"
                              " WHERE batch_id = $1 AND file_name = $2 AND row_data ? 'encounter_id'");
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        px_err_set(x->e, PX_EDB, "cannot read the rejected encounters of '%s'", x->in->name);
        px_err_detail(x->e, "%s", PQresultErrorMessage(r));
        PQclear(r);
        return PX_EDB;
    }
    for (int i = 0; i < PQntuples(r); i++) {
        unsigned char key[16];
        if (etl_uuid_key(PQgetvalue(r, i, 0), key) != 0) continue;
        etl_encounter *en = px_keymap_get(x->encounters, key);
        if (en) en->state = PQgetvalue(r, i, 1)[0] == 't' ? ENC_EXISTING : ENC_REJECTED;
    }
    PQclear(r);
    return 0;
}


/* Rejects of the batch by reason, most frequent first, each with one example
 * ("future_date 40 (e.g. encounters.csv line 7: ...)"), into buf; *counted
 * gets the rejects that count against --max-reject-rate: all but duplicate_key,
 * whose key the warehouse holds already (from this batch or an earlier one). */
int etl_reject_summary(etl_ctx *x, char *buf, size_t len, long long *counted)
{
    PGresult *r = etl_exec(x, "SELECT reason, count(*), (array_agg(file_name || ' line ' || line || ': ' || detail"
                              " ORDER BY file_name, line))[1] FROM etl.rejects WHERE batch_id = $1"
                              " GROUP BY reason ORDER BY 2 DESC, 1");
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        px_err_set(x->e, PX_EDB, "cannot count the rejects of batch %lld", x->batch);
        px_err_detail(x->e, "%s", PQresultErrorMessage(r));
        PQclear(r);
        return PX_EDB;
    }
    size_t o = 0;
    buf[0] = '\0';
    *counted = 0;
    for (int i = 0; i < PQntuples(r); i++) {
        long long n = atoll(PQgetvalue(r, i, 1));
        if (strcmp(PQgetvalue(r, i, 0), "duplicate_key") != 0) *counted += n;
        if (o + 1 >= len) continue;
        int k = snprintf(buf + o, len - o, "%s%s %lld (e.g. %s)", i ? "; " : "", PQgetvalue(r, i, 0), n,
                         PQgetvalue(r, i, 2));
        o = k < 0 ? o : (size_t)k >= len - o ? len - 1 : o + (size_t)k;
    }
    PQclear(r);
    return 0;
}

