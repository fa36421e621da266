/* fuzz_manifest.c: libFuzzer target for the manifest loader (registry/artifact.c).
 * A fixed test key pair (below; never used anywhere else) signs the fuzzed
 * manifest, so that mutations get past the signature check into the parser.
 * Input: a mode byte, then manifest.json's bytes.
 *  mode bit 0 = 0: reg_manifest_parse alone (the checks after verification),
 *    on the bytes as read_fd leaves them (NUL after the end).
 *  mode bit 0 = 1: the verify-then-parse entry point, reg_manifest_open, on a
 *    directory holding the bytes as manifest.json and manifest.sig: a valid
 *    signature (bit 1 = 0) or one with a flipped bit (bit 1 = 1: the diagnosis
 *    path, which parses the unverified manifest for its key_id). A manifest that
 *    opens then has every listed file checked (reg_manifest_check_all) and
 *    model.bin read through it (the directory holds a small model.bin).
 *  bit 2: expect model 'readmission' v(1 + bits 3-4) instead of any name.
 * Checks: no crash, leak or UB; an accepted manifest has a valid name, a
 * version >= 1 and parsed JSON; a refusal is PX_ECORRUPT (or ENOENT-like
 * codes from the file checks) with a message. */
#define _GNU_SOURCE
#include "registry/internal.h"
#include <cjson/cJSON.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FAIL(...) do { fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); abort(); } while (0)

/* Ed25519, generated for this harness only (openssl genpkey -algorithm ed25519). */
static const char test_priv[] = "-----BEGIN PRIVATE KEY-----\n"
                                "MC4CAQAwBQYDK2VwBCIEID5IsjjvgbndiE9MHJ3Qdf7pqRlLdXJzDPC+PSF3rmPe\n"
                                "-----END PRIVATE KEY-----\n";
static const char test_pub[] = "-----BEGIN PUBLIC KEY-----\n"
                               "MCowBQYDK2VwAyEA49AcoOnzE5BR3KW6jUhy2ZZQApccrZZXq2BkuguLOtQ=\n"
                               "-----END PUBLIC KEY-----\n";

static char dir[64], priv_path[128], pub_path[128], man_path[128], sig_path[128], bin_path[128];

static void put(const char *path, const void *p, size_t n, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0 || (n && write(fd, p, n) != (ssize_t)n) || close(fd) != 0) FAIL("cannot write '%s'", path);
}

static void cleanup(void)
{
    unlink(priv_path);
    unlink(pub_path);
    unlink(man_path);
    unlink(sig_path);
    unlink(bin_path);
    rmdir(dir);
}

static void setup(void)
{
    if (dir[0]) return;
    snprintf(dir, sizeof dir, "%s", "/tmp/fuzz_manifest.XXXXXX");
    if (!mkdtemp(dir)) FAIL("no temporary directory");
    snprintf(priv_path, sizeof priv_path, "%s/signing.key", dir);
    snprintf(pub_path, sizeof pub_path, "%s/signing.pub", dir);
    snprintf(man_path, sizeof man_path, "%s/manifest.json", dir);
    snprintf(sig_path, sizeof sig_path, "%s/manifest.sig", dir);
    snprintf(bin_path, sizeof bin_path, "%s/model.bin", dir);
    put(priv_path, test_priv, strlen(test_priv), 0600);
    put(pub_path, test_pub, strlen(test_pub), 0644);
    put(bin_path, "model\n", 6, 0644);
    atexit(cleanup);
}

static void accepted(const reg_manifest *m)
{
    if (!m->json || !reg_valid_name(m->name) || m->version < 1)
        FAIL("accepted a manifest without JSON, a valid name or a version (name '%s' v%d)", m->name, m->version);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    int mode = data[0];
    data++, size--;
    const char *expect = (mode & 4) ? "readmission" : NULL;
    int expect_v = (mode & 4) ? 1 + ((mode >> 3) & 3) : 0;
    px_err e;
    memset(&e, 0, sizeof e);
    if (!(mode & 1)) {
        reg_manifest m;
        memset(&m, 0, sizeof m);
        m.bytes = malloc(size + 1);
        if (!m.bytes) abort();
        memcpy(m.bytes, data, size);
        m.bytes[size] = '\0';
        m.len = size;
        snprintf(m.ctx, sizeof m.ctx, "fuzz");
        int rc = reg_manifest_parse(&m, expect, expect_v, "fuzz", &e);
        if (rc == 0) accepted(&m);
        else if (rc != PX_ECORRUPT || !e.msg[0]) FAIL("refused with code %d and message '%s'", rc, e.msg);
        reg_manifest_release(&m);
        return 0;
    }
    setup();
    unsigned char sig[REG_SIG_BYTES];
    if (reg_sign(priv_path, data, size, sig, &e) != 0) FAIL("cannot sign: %s", e.msg);
    if (mode & 2) sig[size % REG_SIG_BYTES] ^= (unsigned char)(1u << (size % 8));
    char b64[4 * ((REG_SIG_BYTES + 2) / 3) + 2];
    reg_b64_encode(sig, REG_SIG_BYTES, b64);
    size_t bl = strlen(b64);
    b64[bl++] = '\n';
    put(man_path, data, size, 0644);
    put(sig_path, b64, bl, 0644);
    reg_manifest m;
    int rc = reg_manifest_open(dir, pub_path, expect, expect_v, "fuzz", &m, &e);
    if (rc == 0) {
        if (mode & 2) FAIL("a manifest with a flipped signature bit opened");
        accepted(&m);
        (void)reg_manifest_check_all(&m, dir, NULL, &e);
        unsigned char *bytes = NULL;
        size_t len = 0;
        if (reg_manifest_read(&m, dir, "model.bin", &bytes, &len, &e) == 0 && (len != 6 || memcmp(bytes, "model\n", 6)))
            FAIL("model.bin read through the manifest as %zu other bytes", len);
        free(bytes);
        reg_manifest_release(&m);
    } else if (!e.msg[0]) {
        FAIL("refused with code %d and no message", rc);
    }
    return 0;
}
