/* pgctl.c: the embedded PostgreSQL cluster under $PROGNOS_HOME/pg.
 * PostgreSQL refuses to run as root, so when we are root every server-side
 * command runs as PROGNOS_PG_USER (default postgres) via runuser(1), and pg/ is
 * owned by that user. If that user cannot reach PROGNOS_HOME (say, a checkout
 * inside a 0700 directory), the cluster lives in PX_CLUSTER_DIR/<hash of the
 * home> and $PROGNOS_HOME/pg is a symbolic link to it; every path handed to the
 * server is the resolved one. The server listens on a Unix socket in pg/run only. */
#include "engine/internal.h"
#include <errno.h>
#include <fcntl.h>
#include <libpq-fe.h>
#include <limits.h>
#include <openssl/evp.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>
#include <sys/shm.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PX_DB_NAME "prognos"
#define PX_DB_ROLE "prognos"

#define PX_CLUSTER_DIR "/var/lib/prognos/clusters"

/* The cluster's directory as the server sees it: $PROGNOS_HOME/pg, resolved
 * when it is a link to PX_CLUSTER_DIR. */
static void pg_paths(const px_config *cfg, char *pg, char *data, char *run, size_t len)
{
    char link[4200], real[PATH_MAX];
    snprintf(link, sizeof link, "%s/pg", cfg->home);
    snprintf(pg, len, "%s", realpath(link, real) ? real : link);
    /* a truncated path would name another directory: leave it empty instead */
    if (snprintf(data, len, "%s/data", pg) >= (int)len) data[0] = '\0';
    if (snprintf(run, len, "%s/run", pg) >= (int)len) run[0] = '\0';
}

/* Places the cluster in PX_CLUSTER_DIR when the server user cannot reach the
 * home, leaving $PROGNOS_HOME/pg as a link to it. A directory left there by a
 * home that no longer exists is moved aside, not reused. */
static int place_cluster(const px_config *cfg, const struct passwd *owner, px_err *e)
{
    char link[4200], target[256], aside[300];
    unsigned char md[32];
    unsigned int n = 0;
    snprintf(link, sizeof link, "%s/pg", cfg->home);
    if (access(link, F_OK) == 0) return 0;
    EVP_Digest(cfg->home, strlen(cfg->home), md, &n, EVP_sha256(), NULL);
    int len = snprintf(target, sizeof target, "%s/", PX_CLUSTER_DIR);
    for (int i = 0; i < 8; i++) len += snprintf(target + len, sizeof target - (size_t)len, "%02x", md[i]);
    if (mkdir("/var/lib/prognos", 0755) != 0 && errno != EEXIST)
        return px_err_set(e, PX_EIO, "cannot create /var/lib/prognos: %s", strerror(errno));
    if (mkdir(PX_CLUSTER_DIR, 0755) != 0 && errno != EEXIST)
        return px_err_set(e, PX_EIO, "cannot create %s: %s", PX_CLUSTER_DIR, strerror(errno));
    if (access(target, F_OK) == 0) {
        snprintf(aside, sizeof aside, "%s.orphaned-%ld", target, (long)time(NULL));
        if (rename(target, aside) != 0)
            return px_err_set(e, PX_EIO, "cannot move aside '%s': %s", target, strerror(errno));
        px_log(PX_LOG_WARN, "moved an orphaned cluster aside: %s", aside);
    }
    if (mkdir(target, 0700) != 0 || chown(target, owner->pw_uid, owner->pw_gid) != 0)
        return px_err_set(e, PX_EIO, "cannot create '%s': %s", target, strerror(errno));
    if (symlink(target, link) != 0)
        return px_err_set(e, PX_EIO, "cannot link '%s' to '%s': %s", link, target, strerror(errno));
    px_log(PX_LOG_INFO, "user %s cannot reach %s: the cluster lives in %s", owner->pw_name, cfg->home, target);
    return 0;
}

/* Runs argv (argv[0] a full path) and waits. When root, runs it as the server
 * user through runuser. Output goes to our stderr unless quiet (then to
 * /dev/null). Returns the exit status, or -1 if it could not run. */
static int run_server_cmd(const px_config *cfg, const char *cwd, char *const argv[], int quiet)
{
    char *full[32];
    int n = 0;
    if (geteuid() == 0) {
        full[n++] = "runuser";
        full[n++] = "-u";
        full[n++] = (char *)cfg->pg_user;
        full[n++] = "--";
    }
    for (int i = 0; argv[i] && n < 31; i++) full[n++] = argv[i];
    full[n] = NULL;

    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        if (cwd && chdir(cwd) != 0) _exit(126);
        int devnull = open("/dev/null", O_RDWR);
        if (devnull >= 0) {
            dup2(devnull, STDIN_FILENO);
            if (quiet) dup2(devnull, STDOUT_FILENO);
            else dup2(STDERR_FILENO, STDOUT_FILENO); /* keep our stdout clean for data */
            if (quiet) dup2(devnull, STDERR_FILENO);
        }
        execvp(full[0], full);
        _exit(127);
    }
    int status;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR) return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* libpq conninfo for the embedded server's maintenance database or warehouse. */
static void embedded_conninfo(const px_config *cfg, const char *db, char *buf, size_t len)
{
    char pg[4300], data[4300], run[4300];
    pg_paths(cfg, pg, data, run, sizeof pg);
    snprintf(buf, len, "host='%s' dbname='%s' user='%s' connect_timeout=10", run, db, PX_DB_ROLE);
}

int px_pg_initialized(const px_config *cfg)
{
    char path[4300];
    snprintf(path, sizeof path, "%s/pg/data/PG_VERSION", cfg->home);
    return access(path, F_OK) == 0;
}

static int check_bin(const px_config *cfg, px_err *e)
{
    if (!cfg->pg_bin[0]) {
        px_err_set(e, PX_ESTATE, "cannot find the PostgreSQL server programs (initdb, pg_ctl)");
        px_err_hint(e, "install them with 'apt-get install postgresql-15', or set PROGNOS_PG_BIN");
        return PX_ESTATE;
    }
    return 0;
}

/* Creates dir (mode) if missing; when root, hands it to the server user. */
static int make_dir(const char *dir, mode_t mode, const struct passwd *owner, px_err *e)
{
    if (mkdir(dir, mode) != 0 && errno != EEXIST)
        return px_err_set(e, PX_EIO, "cannot create directory '%s': %s", dir, strerror(errno));
    if (owner && chown(dir, owner->pw_uid, owner->pw_gid) != 0)
        return px_err_set(e, PX_EIO, "cannot give '%s' to user '%s': %s", dir, owner->pw_name, strerror(errno));
    if (chmod(dir, mode) != 0)
        return px_err_set(e, PX_EIO, "cannot set the mode of '%s': %s", dir, strerror(errno));
    return 0;
}

static int mkdir_home(const px_config *cfg, px_err *e)
{
    /* The home holds the key (0600) and pg/ (0700, the server's); it is 0755 so
     * that the server user can reach pg/ when we are root. */
    if (mkdir(cfg->home, 0755) != 0 && errno != EEXIST)
        return px_err_set(e, PX_EIO, "cannot create PROGNOS_HOME '%s': %s", cfg->home, strerror(errno));
    return 0;
}

/* A home copied or restored to another path keeps, in its postgresql.auto.conf,
 * the socket directory of the home it was copied from: the server would listen
 * there (or fail to), and every client here would wait for a socket that never
 * appears. Sets that line to this home's run directory, keeping the file's owner
 * and mode (the server's user writes it with ALTER SYSTEM). */
static int set_socket_dir(const char *path, const char *run, px_err *e)
{
    static const char key[] = "unix_socket_directories = '";
    unsigned char *buf = NULL;
    size_t len = 0;
    int rc = px_file_read(path, 1 << 20, &buf, &len, e);
    if (rc != 0) return rc;
    char *text = (char *)buf, *line = NULL;
    for (char *p = text; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
        if (strncmp(p, key, sizeof key - 1) == 0) line = p;
    if (!line) { free(buf); return 0; }
    char *val = line + sizeof key - 1, *end = strchr(val, '\n');
    size_t vlen = end ? (size_t)(end - val) : strlen(val);
    if (vlen == strlen(run) + 1 && strncmp(val, run, strlen(run)) == 0 && val[vlen - 1] == '\'') {
        free(buf);
        return 0;
    }
    struct stat st;
    if (stat(path, &st) != 0) {
        free(buf);
        return px_err_set(e, PX_EIO, "cannot stat '%s': %s", path, strerror(errno));
    }
    size_t head = (size_t)(line - text), tail = end ? strlen(end) : 0;
    size_t cap = head + sizeof key + strlen(run) + 2 + tail;
    char *out = malloc(cap);
    if (!out) { free(buf); return px_err_set(e, PX_ENOMEM, "out of memory"); }
    int n = snprintf(out, cap, "%.*s%s%s'%s", (int)head, text, key, run, end ? end : "\n");
    rc = px_file_write_atomic_owned(path, out, (size_t)n, (int)(st.st_mode & 07777), st.st_uid, st.st_gid, e);
    if (rc == 0) px_log(PX_LOG_INFO, "this home was moved or copied: the server's socket directory is now %s", run);
    free(out);
    free(buf);
    return rc;
}

static int write_server_conf(const px_config *cfg, const char *data, const char *run, px_err *e)
{
    char path[4400], line[256];
    snprintf(path, sizeof path, "%s/postgresql.auto.conf", data);
    FILE *f = fopen(path, "r");
    if (f) { /* written already (a crash between initdb and here must not leave TCP + trust) */
        int done = 0;
        int twopc = 0;
        while (fgets(line, sizeof line, f)) {
            done |= strncmp(line, "# written by prognos", 20) == 0;
            twopc |= strncmp(line, "max_prepared_transactions", 25) == 0;
        }
        fclose(f);
        if (done) {
            int rc = set_socket_dir(path, run, e);
            if (rc != 0) return rc;
        }
        if (done && twopc) return 0;
        if (done) { /* a cluster made before sharded loads: add what they need (applies at the next start) */
            if (!(f = fopen(path, "a"))) return px_err_set(e, PX_EIO, "cannot write '%s': %s", path, strerror(errno));
            fprintf(f, "max_prepared_transactions = 10\n");
            if (fclose(f) != 0) return px_err_set(e, PX_EIO, "cannot write '%s'", path);
            return 0;
        }
    }
    /* LZ4 for the full-page images in the WAL: a fraction of the CPU of pglz ("on"). It
     * needs PostgreSQL 15 built with lz4 (Debian's is): the server is asked whether it
     * takes the setting, and "on" written where it does not. */
    char postgres[4300];
    snprintf(postgres, sizeof postgres, "%s/postgres", cfg->pg_bin);
    char *probe[] = {postgres, "-D", (char *)data, "-C", "wal_compression", "-c", "wal_compression=lz4", NULL};
    const char *walc = run_server_cmd(cfg, "/", probe, 1) == 0 ? "lz4" : "on";
    f = fopen(path, "a");
    if (!f) return px_err_set(e, PX_EIO, "cannot write '%s': %s", path, strerror(errno));
    /* Unix socket only; sized for one analytics workload on a small machine.
     * wal_level=minimal: no replication from an embedded cluster, less WAL on loads.
     * log_min_error_statement=panic: a failed statement's text is never logged.
     * max_prepared_transactions: a cluster that is a shard of a sharded warehouse
     * takes each load's part with two-phase commit (engine/shard_load.c). */
    fprintf(f,
            "# written by prognos db init\n"
            "listen_addresses = ''\n"
            "unix_socket_directories = '%s'\n"
            "unix_socket_permissions = 0700\n"
            "shared_buffers = '512MB'\n"
            "work_mem = '64MB'\n"
            "maintenance_work_mem = '512MB'\n"
            "max_wal_size = '8GB'\n"
            "checkpoint_timeout = '30min'\n"
            "wal_level = minimal\n"
            "max_prepared_transactions = 10\n"
            "max_wal_senders = 0\n"
            "wal_compression = %s\n"
            "log_min_error_statement = panic\n"
            "log_min_messages = warning\n"
            "log_line_prefix = '%%m [%%p] '\n",
            run, walc);
    (void)cfg;
    if (fclose(f) != 0) return px_err_set(e, PX_EIO, "cannot write '%s'", path);
    return 0;
}

static int create_database(const px_config *cfg, px_err *e)
{
    char ci[4500];
    embedded_conninfo(cfg, "postgres", ci, sizeof ci);
    PGconn *c = PQconnectdb(ci);
    if (PQstatus(c) != CONNECTION_OK) {
        px_err_set(e, PX_EDB, "cannot connect to the embedded server");
        px_err_detail(e, "%s", PQerrorMessage(c));
        PQfinish(c);
        return PX_EDB;
    }
    PGresult *r = PQexec(c, "SELECT 1 FROM pg_database WHERE datname = '" PX_DB_NAME "'");
    int exists = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1;
    PQclear(r);
    int rc = 0;
    if (!exists) {
        r = PQexec(c, "CREATE DATABASE " PX_DB_NAME " TEMPLATE template0 ENCODING 'UTF8' LOCALE 'C'");
        if (PQresultStatus(r) != PGRES_COMMAND_OK) {
            rc = px_err_set(e, PX_EDB, "cannot create database '" PX_DB_NAME "'");
            px_err_detail(e, "%s", PQerrorMessage(c));
        }
        PQclear(r);
    }
    PQfinish(c);
    return rc;
}

static int check_socket_len(const char *run, px_err *e)
{
    struct sockaddr_un sa;
    if (strlen(run) + strlen("/.s.PGSQL.5432") >= sizeof sa.sun_path) {
        px_err_set(e, PX_EINVAL, "PROGNOS_HOME is too deep for a Unix socket path");
        px_err_detail(e, "the socket would be '%s/.s.PGSQL.5432', over the %zu-byte limit", run,
                      sizeof sa.sun_path - 1);
        px_err_hint(e, "set PROGNOS_HOME to a shorter path");
        return PX_EINVAL;
    }
    return 0;
}

int px_pg_init(const px_config *cfg, px_err *e)
{
    char pg[4300], data[4300], run[4300];
    int rc;
    if ((rc = mkdir_home(cfg, e)) != 0) return rc;
    if ((rc = px_pseudo_keygen(cfg->key_file, e)) != 0) return rc;
    if (cfg->external) return 0; /* the caller connects and migrates */
    if ((rc = check_bin(cfg, e)) != 0) return rc;

    if (!px_pg_initialized(cfg)) {
        struct passwd *owner = NULL;
        if (geteuid() == 0) {
            owner = getpwnam(cfg->pg_user);
            if (!owner) {
                px_err_set(e, PX_ESTATE, "user '%s' does not exist to run PostgreSQL", cfg->pg_user);
                px_err_detail(e, "PostgreSQL refuses to run as root, so prognos runs it as an unprivileged user");
                px_err_hint(e, "install postgresql-15 (it creates 'postgres') or set PROGNOS_PG_USER");
                return PX_ESTATE;
            }
            char *probe[] = {"test", "-x", (char *)cfg->home, NULL};
            if (run_server_cmd(cfg, "/", probe, 1) != 0 && (rc = place_cluster(cfg, owner, e)) != 0) return rc;
        }
        pg_paths(cfg, pg, data, run, sizeof pg);
        if ((rc = check_socket_len(run, e)) != 0) return rc;
        if ((rc = make_dir(pg, 0700, owner, e)) != 0) return rc;
        if ((rc = make_dir(run, 0700, owner, e)) != 0) return rc;
        if (owner) {
            char *probe[] = {"test", "-w", pg, NULL};
            if (run_server_cmd(cfg, "/", probe, 1) != 0) {
                px_err_set(e, PX_ESTATE, "user '%s' cannot reach '%s'", cfg->pg_user, pg);
                px_err_detail(e, "a directory above the cluster is not searchable by that user");
                px_err_hint(e, "chmod o+x the parent directories, or set PROGNOS_HOME elsewhere (e.g. /var/lib/prognos)");
                return PX_ESTATE;
            }
        }
        char initdb[4300];
        snprintf(initdb, sizeof initdb, "%s/initdb", cfg->pg_bin);
        char *argv[] = {initdb, "-D", data, "-U", PX_DB_ROLE, "--auth=trust", "--encoding=UTF8",
                        "--locale=C", "--no-instructions", NULL};
        px_log(PX_LOG_INFO, "initialising the embedded cluster in %s", data);
        if (run_server_cmd(cfg, pg, argv, 1) != 0) {
            px_err_set(e, PX_EIO, "initdb failed for '%s'", data);
            px_err_hint(e, "run '%s -D %s' by hand to see why; remove %s to start over", initdb, data, pg);
            return PX_EIO;
        }
        if ((rc = write_server_conf(cfg, data, run, e)) != 0) return rc;
    }
    if ((rc = px_pg_start(cfg, e)) != 0) return rc;
    return create_database(cfg, e);
}

static int ping(const px_config *cfg)
{
    char ci[4500];
    embedded_conninfo(cfg, "postgres", ci, sizeof ci);
    return PQping(ci) == PQPING_OK;
}

/* What postmaster.pid says about the server that wrote it. */
enum pm_state {
    PM_NONE,   /* no postmaster.pid (or no PID in it) */
    PM_ALIVE,  /* a live postgres process with our data directory as its working directory */
    PM_GONE,   /* the process is gone: the server's own check handles the file */
    PM_STALE,  /* a zombie (killed, not yet reaped by its parent) or another program under
                * that PID: the server would take the file as held and refuse to start */
};

/* Reads postmaster.pid: the PID (line 1), the socket's lock file (port on
 * line 4, socket directory on line 5; may be NULL) and the System V shared
 * memory id (line 7, "key id"; -1 when absent). */
static enum pm_state postmaster_state(const char *data, long *pid_out, long *shmid_out, char *sock_lock, size_t sllen)
{
    char path[4400], buf[2048], proc[64], cwd[PATH_MAX], real[PATH_MAX];
    *pid_out = 0;
    *shmid_out = -1;
    if (sock_lock && sllen) sock_lock[0] = '\0';
    snprintf(path, sizeof path, "%s/postmaster.pid", data);
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    if (fd < 0) return PM_NONE;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return PM_NONE;
    buf[n] = '\0';
    long pid = strtol(buf, NULL, 10);
    if (pid <= 0) return PM_NONE;
    *pid_out = pid;
    const char *l = buf, *port = NULL, *sockdir = NULL;
    for (int i = 1; i < 7 && l; i++) {
        l = strchr(l, '\n');
        if (l) l++;
        if (i == 3) port = l;
        if (i == 4) sockdir = l;
    }
    if (sock_lock && port && sockdir && *sockdir == '/') {
        long pt = strtol(port, NULL, 10);
        size_t dl = strcspn(sockdir, "\n");
        if (pt > 0 && snprintf(sock_lock, sllen, "%.*s/.s.PGSQL.%ld.lock", (int)dl, sockdir, pt) >= (int)sllen)
            sock_lock[0] = '\0';
    }
    long key = 0, id = -1;
    if (l && sscanf(l, "%ld %ld", &key, &id) == 2) *shmid_out = id;
    /* /proc/PID/stat: "pid (comm) S ...": the state follows the last ')' */
    snprintf(proc, sizeof proc, "/proc/%ld/stat", pid);
    fd = open(proc, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return errno == ENOENT ? PM_GONE : PM_ALIVE; /* cannot tell: the server decides */
    n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return PM_GONE;
    buf[n] = '\0';
    char *open_paren = strchr(buf, '('), *close_paren = strrchr(buf, ')');
    if (!open_paren || !close_paren || close_paren[1] != ' ') return PM_ALIVE;
    char state = close_paren[2];
    if (state == 'Z' || state == 'X') return PM_STALE;
    *close_paren = '\0';
    if (strcmp(open_paren + 1, "postgres") != 0) return PM_STALE;
    /* a postmaster works in its data directory */
    snprintf(proc, sizeof proc, "/proc/%ld/cwd", pid);
    ssize_t cl = readlink(proc, cwd, sizeof cwd - 1);
    if (cl < 0) return PM_ALIVE; /* cannot tell: the server decides */
    cwd[cl] = '\0';
    if (!realpath(data, real)) return PM_ALIVE;
    return strcmp(cwd, real) == 0 ? PM_ALIVE : PM_STALE;
}

/* The PID on the first line of a lock file, or 0. */
static long lock_pid(const char *path)
{
    char buf[64];
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    if (fd < 0) return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return 0;
    buf[n] = '\0';
    return strtol(buf, NULL, 10);
}

/* Processes still attached to the old server's shared memory (its backends
 * outlive a killed postmaster until they notice): 0 when none or the segment is
 * gone, -1 when it cannot be told. */
static long shm_attached(long shmid)
{
    if (shmid < 0) return 0;
    struct shmid_ds ds;
    if (shmctl((int)shmid, IPC_STAT, &ds) != 0) return errno == EINVAL || errno == EIDRM ? 0 : -1;
    return (long)ds.shm_nattch;
}

/* Waits until the cluster's server is one that can be started or is running:
 * a server starting up, in crash recovery or shutting down (it answers pings
 * with a refusal, or its postmaster is alive without answering yet) is waited
 * for; a postmaster.pid left by a killed server whose PID is a zombie or another
 * program is removed once no old backend is attached to its shared memory.
 * Returns 1 when the server accepts connections, 0 when it is to be started,
 * or PX_EIO (e set) after timeout_s. */
static int settle(const px_config *cfg, const char *data, int timeout_s, px_err *e)
{
    char ci[4500];
    embedded_conninfo(cfg, "postgres", ci, sizeof ci);
    double t0 = px_mono_s();
    int said = 0;
    const char *why = "";
    for (;;) {
        PGPing p = PQping(ci);
        if (p == PQPING_OK) {
            if (said) px_log(PX_LOG_INFO, "embedded server ready after waiting (%s)", why);
            return 1;
        }
        long pid = 0, shmid = -1;
        char sock_lock[4400];
        enum pm_state st = postmaster_state(data, &pid, &shmid, sock_lock, sizeof sock_lock);
        if (p == PQPING_REJECT) why = "the server is starting up, in recovery or shutting down";
        else if (st == PM_ALIVE) why = "the server's postmaster is running but not answering yet";
        else if (st == PM_STALE) {
            long att = shm_attached(shmid);
            if (att == 0) {
                char path[4400];
                snprintf(path, sizeof path, "%s/postmaster.pid", data);
                /* the socket's lock file names the same PID: the server would refuse on it next */
                if (sock_lock[0] && lock_pid(sock_lock) == pid) (void)unlink(sock_lock);
                if (unlink(path) == 0 || errno == ENOENT) {
                    px_log(PX_LOG_WARN, "removed a stale postmaster.pid (PID %ld is %s)", pid,
                           "a killed server not yet reaped, or another program");
                    return 0;
                }
                px_err_set(e, PX_EIO, "cannot remove the stale '%s': %s", path, strerror(errno));
                return PX_EIO;
            }
            if (att < 0) return 0; /* cannot tell: leave the decision to the server's own checks */
            why = "backends of a killed server are still attached to its shared memory";
        } else
            return 0; /* no server, or a gone one: start it */
        if (px_mono_s() - t0 >= timeout_s) {
            px_err_set(e, PX_EIO, "the embedded PostgreSQL server did not become ready in %d s", timeout_s);
            px_err_detail(e, "%s (postmaster.pid: PID %ld)", why, pid);
            px_err_hint(e, "see the server log: %s/../server.log", data);
            return PX_EIO;
        }
        if (!said) {
            px_log(PX_LOG_INFO, "waiting for the embedded server: %s", why);
            said = 1;
        }
        struct timespec nap = {0, 100 * 1000 * 1000};
        nanosleep(&nap, NULL);
    }
}

int px_pg_start(const px_config *cfg, px_err *e)
{
    char pg[4300], data[4300], run[4300], ctl[4300], logf[4400];
    int rc;
    if (cfg->external) return px_err_set(e, PX_ESTATE, "PROGNOS_DB is set: prognos does not manage that server");
    if (!px_pg_initialized(cfg))
        return px_err_set(e, PX_ESTATE, "no embedded cluster in '%s'; run 'prognos db init'", cfg->home);
    if ((rc = check_bin(cfg, e)) != 0) return rc;
    pg_paths(cfg, pg, data, run, sizeof pg);
    /* right after a crash the old server may be recovering, or may have left a
     * postmaster.pid that names an unreaped process: wait, or clean up */
    if ((rc = settle(cfg, data, 120, e)) != 0) return rc > 0 ? 0 : rc;
    if ((rc = check_socket_len(run, e)) != 0) return rc;
    if ((rc = write_server_conf(cfg, data, run, e)) != 0) return rc;
    snprintf(ctl, sizeof ctl, "%s/pg_ctl", cfg->pg_bin);
    snprintf(logf, sizeof logf, "%s/server.log", pg);
    char *argv[] = {ctl, "-D", data, "-l", logf, "-w", "-t", "120", "start", NULL};
    int st = run_server_cmd(cfg, pg, argv, 1);
    if (st != 0 && !ping(cfg)) {
        /* another start raced us (two commands at once): wait for that server */
        px_err se = {0};
        if (settle(cfg, data, 120, &se) == 1) return 0;
        px_err_set(e, PX_EIO, "cannot start the embedded PostgreSQL server");
        px_err_detail(e, "pg_ctl exited with status %d", st);
        px_err_hint(e, "see the server log: %s", logf);
        return PX_EIO;
    }
    px_log(PX_LOG_INFO, "embedded server started (%s)", data);
    return 0;
}

int px_pg_stop(const px_config *cfg, px_err *e)
{
    char pg[4300], data[4300], run[4300], ctl[4300], ci[4500];
    int rc;
    if (cfg->external) return px_err_set(e, PX_ESTATE, "PROGNOS_DB is set: prognos does not manage that server");
    if (!px_pg_initialized(cfg)) return 0;
    if ((rc = check_bin(cfg, e)) != 0) return rc;
    pg_paths(cfg, pg, data, run, sizeof pg);
    embedded_conninfo(cfg, "postgres", ci, sizeof ci);
    long pid = 0, shmid = -1;
    /* a server in recovery refuses pings but is running: stop it too */
    if (PQping(ci) == PQPING_NO_RESPONSE && postmaster_state(data, &pid, &shmid, NULL, 0) != PM_ALIVE) return 0;
    snprintf(ctl, sizeof ctl, "%s/pg_ctl", cfg->pg_bin);
    char *argv[] = {ctl, "-D", data, "-m", "fast", "-w", "-t", "120", "stop", NULL};
    if (run_server_cmd(cfg, pg, argv, 1) != 0 && PQping(ci) != PQPING_NO_RESPONSE)
        return px_err_set(e, PX_EIO, "cannot stop the embedded PostgreSQL server");
    px_log(PX_LOG_INFO, "embedded server stopped");
    return 0;
}

int px_pg_status(const px_config *cfg, char *info, size_t infolen, px_err *e)
{
    (void)e;
    if (cfg->external) {
        int up = PQping(cfg->db_url) == PQPING_OK;
        snprintf(info, infolen, "external server (PROGNOS_DB): %s", up ? "accepting connections" : "not reachable");
        return up;
    }
    if (!px_pg_initialized(cfg)) {
        snprintf(info, infolen, "no embedded cluster in %s (run 'prognos db init')", cfg->home);
        return 0;
    }
    char ci[4500];
    embedded_conninfo(cfg, "postgres", ci, sizeof ci);
    PGPing p = PQping(ci);
    snprintf(info, infolen, "embedded server in %s/pg: %s", cfg->home,
             p == PQPING_OK ? "running" : p == PQPING_REJECT ? "not accepting connections (starting up, in recovery or shutting down)" : "stopped");
    return p == PQPING_OK;
}

/* Percent-encodes a path for a URI query value. */
static void pct_encode(const char *s, char *out, size_t len)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    for (; *s && o + 4 < len; s++) {
        unsigned char ch = (unsigned char)*s;
        if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
            ch == '-' || ch == '_' || ch == '.' || ch == '~') {
            out[o++] = (char)ch;
        } else {
            out[o++] = '%';
            out[o++] = hex[ch >> 4];
            out[o++] = hex[ch & 15];
        }
    }
    out[o] = '\0';
}

int px_pg_url(const px_config *cfg, char *buf, size_t len, px_err *e)
{
    if (cfg->external) {
        if (strlen(cfg->db_url) >= len) return px_err_set(e, PX_EINVAL, "PROGNOS_DB is too long");
        strcpy(buf, cfg->db_url);
        return 0;
    }
    char pg[4300], data[4300], run[4300], enc[13000];
    pg_paths(cfg, pg, data, run, sizeof pg);
    pct_encode(run, enc, sizeof enc);
    if ((size_t)snprintf(buf, len, "postgresql:///%s?host=%s&user=%s", PX_DB_NAME, enc, PX_DB_ROLE) >= len)
        return px_err_set(e, PX_EINVAL, "database URL too long");
    return 0;
}
