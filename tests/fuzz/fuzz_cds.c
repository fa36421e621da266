/* fuzz_cds.c: libFuzzer target for the CDS Hooks request bodies (serve/cds.c):
 * the service call (srv_cds_call: the strict JSON check, the hook request's
 * members, context, prefetch and fhirAuthorization) and the feedback
 * (srv_cds_feedback: every item's card uuid, outcome, timestamp, suggestions
 * and override reason). The server serves no model (a call that passes its
 * checks ends in 503 model_unavailable, or 200 with no card outside a stay;
 * features from FHIR resources are fuzz_fhir's) and its warehouse is a socket
 * that does not exist (feedback that passes its checks ends in 503
 * database_unavailable, without waiting). Input: a mode byte, then the body.
 *  mode bit 0: 0 the call, 1 the feedback; bit 1: the service
 *  (readmission-risk, stay-outlook); bit 2: an unknown service instead.
 * Checks, for any body: no crash, leak or UB; the status is one the route
 * answers (200 only for a call, 404 only for an unknown service) and every
 * answer is valid JSON of valid UTF-8; a body the strict check refuses never
 * gets past it (200 or 503 from the model or the warehouse). */
#include "serve/internal.h"
#include "tests/unit/serve_fixture.h"
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FAIL(...) do { fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); abort(); } while (0)

static px_server *server;
static srv_model model; /* none served: only the request's scaffolding */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!server) {
        server = calloc(1, sizeof *server);
        if (!server) abort();
        server->p = px_serve_default_params();
        server->p.max_instances = 16;
        server->cfg.external = 1;
        snprintf(server->cfg.db_url, sizeof server->cfg.db_url, "%s",
                 "postgresql:///prognos?host=/nonexistent-fuzz-cds&connect_timeout=1");
        srv_cjson_hooks_install(); /* cJSON allocates in the request arena, as in the server */
    }
    if (size < 1 || size > 16384) return 0;
    int mode = data[0];
    data++, size--;
    srv_req *r = fixture_request(server, &model, data, size);
    r->sm = NULL;
    r->route = (mode & 1) ? R_CDS_FEEDBACK : R_CDS_CALL;
    snprintf(r->model_name, sizeof r->model_name, "%s",
             (mode & 4) ? "readmission" : (mode & 2) ? "stay-outlook" : "readmission-risk");
    unsigned st = (mode & 1) ? srv_cds_feedback(r, NULL) : srv_cds_call(r, NULL);
    if (st == 404 ? !(mode & 4) : (mode & 4)) FAIL("status %u for service '%s'", st, r->model_name);
    if (st != 200 && st != 400 && st != 404 && st != 503) FAIL("status %u", st);
    if (st == 200 && (mode & 1)) FAIL("feedback stored without a warehouse");
    if ((st == 200 || (st == 503 && r->json)) && px_json_validate((const char *)data, size, 64, NULL, NULL) != 0)
        FAIL("a body the strict check refuses got past it (status %u)", st);
    const char *why = NULL;
    size_t off = 0;
    if (!r->out.data || px_json_validate(r->out.data, r->out.len, 8, &off, &why) != 0)
        FAIL("status %u with an answer that is not valid JSON (%s at %zu): %.*s", st, why ? why : "none", off,
             (int)r->out.len, r->out.data ? r->out.data : "");
    srv_release(r->sm);
    fixture_request_free(r);
    return 0;
}
