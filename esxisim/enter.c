/* esxisim's enter.main in C: what runs first in every command "on the host" (see enter.py, which
 * compiles this file once per source hash and passes it the layer table, and docs/esxisim.md).
 *
 * A Python start, ctypes and the mounts cost about 30 ms of CPU per command, thousands of commands
 * per test run; this costs a few. It must do exactly what enter.main does, messages and exit
 * statuses included (a failed mkdir or mount: one line and exit 1, where Python printed its traceback);
 * enter.py keeps the Python version for machines without a C compiler.
 *
 * usage (under `unshare --mount --uts --propagation private`):
 *   enter ROOT STATE_FILE HOSTNAME_FILE NAME:TARGET[:private]... -- CMD ARGS...
 */
#define _GNU_SOURCE
#include <errno.h>
#include <dirent.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

static void die(const char *what, const char *path)
{
    fprintf(stderr, "esxisim: %s %s: %s\n", what, path, strerror(errno));
    exit(1);
}

static void *checked(void *p)
{
    if (!p) {
        perror("esxisim");
        exit(1);
    }
    return p;
}

static char *join(const char *a, const char *b)
{
    char *p;
    if (asprintf(&p, "%s/%s", a, b) < 0) {
        perror("esxisim");
        exit(1);
    }
    return p;
}

/* os.makedirs(path, exist_ok=True) */
static void makedirs(const char *path)
{
    char buf[4096];
    size_t n = strlen(path);
    if (n >= sizeof buf) {
        errno = ENAMETOOLONG;
        die("mkdir", path);
    }
    memcpy(buf, path, n + 1);
    for (char *p = buf + 1; ; p++) {
        if (*p == '/' || *p == '\0') {
            char c = *p;
            *p = '\0';
            if (mkdir(buf, 0777) != 0) {
                struct stat st;
                if (errno != EEXIST || stat(buf, &st) != 0 || !S_ISDIR(st.st_mode))
                    die("mkdir", buf);
            }
            if (c == '\0')
                return;
            *p = c;
        }
    }
}

static int is_dir(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static int remove_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st; (void)flag; (void)ftw;
    remove(path);  /* shutil.rmtree(ignore_errors=True) */
    return 0;
}

/* work.<pid> is stale once no process has that pid (a pid that is no number: stale too) */
static int stale(const char *name)
{
    char *end;
    long pid;
    if (strncmp(name, "work.", 5) != 0)
        return 0;
    errno = 0;
    pid = strtol(name + 5, &end, 10);
    if (name[5] == '\0' || *end != '\0' || errno || pid != (pid_t)pid)
        return 1;
    return kill((pid_t)pid, 0) != 0 && errno == ESRCH;
}

static void cleanup_workdirs(const char *root, const char *layer)
{
    char *d = join(root, "root");
    char *base = join(d, layer);
    DIR *dir = is_dir(base) ? opendir(base) : NULL;
    struct dirent *e;
    if (dir) {
        while ((e = readdir(dir)) != NULL) {
            if (stale(e->d_name)) {
                char *w = join(base, e->d_name);
                nftw(w, remove_one, 16, FTW_DEPTH | FTW_PHYS);
                free(w);
            }
        }
        closedir(dir);
    }
    free(base);
    free(d);
}

static void do_mount(const char *src, const char *target, const char *type, unsigned long flags,
                     const char *data)
{
    if (mount(src, target, type, flags, data) != 0) {
        fprintf(stderr, "esxisim: mount %s on %s: %s\n", src, target, strerror(errno));
        exit(1);
    }
}

static void set_hostname(const char *root, const char *file)
{
    char *path = join(root, file);
    char name[256];
    FILE *f = fopen(path, "r");
    size_t n = 0;
    if (f) {
        n = fread(name, 1, sizeof name - 1, f);
        fclose(f);
    }
    while (n > 0 && (name[n - 1] == '\n' || name[n - 1] == '\r'))
        n--;
    if (n > 0 && sethostname(name, n) != 0)
        die("sethostname", path);
    free(path);
}

/* SIGPIPE and SIGXFSZ at their defaults and nothing blocked, as a command on the host gets them from
 * sshd: what is ignored or blocked stays so through exec, and a Python parent (subprocess with
 * restore_signals=False) ignores both */
static void default_signals(void)
{
    sigset_t none;
    signal(SIGPIPE, SIG_DFL);
    signal(SIGXFSZ, SIG_DFL);
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
}

/* os.execvp: Python's own PATH search (no /bin/sh for a file without #!, unlike execvp(3)); the
 * first error other than "no such file" or "not a directory" wins, else the last */
static void exec_path(char **cmd)
{
    const char *path = getenv("PATH");
    int saved = 0, last = ENOENT;
    if (strchr(cmd[0], '/')) {
        execv(cmd[0], cmd);
        return;
    }
    char *dirs = checked(strdup(path ? path : "/bin:/usr/bin"));  /* os.defpath */
    for (char *dir = dirs, *next; dir; dir = next) {
        next = strchr(dir, ':');
        if (next)
            *next++ = '\0';
        char *full = *dir ? join(dir, cmd[0]) : checked(strdup(cmd[0]));
        execv(full, cmd);
        last = errno;
        if (!saved && errno != ENOENT && errno != ENOTDIR)
            saved = errno;
        free(full);
    }
    errno = saved ? saved : last;
}

int main(int argc, char **argv)
{
    if (argc < 5) {
        fprintf(stderr, "usage: %s ROOT STATE_FILE HOSTNAME_FILE LAYER... -- CMD...\n", argv[0]);
        return 2;
    }
    const char *root = argv[1];
    char **layers = argv + 4, **cmd = argv + 4;
    while (*cmd && strcmp(*cmd, "--") != 0)
        cmd++;
    if (!*cmd || !cmd[1]) {
        fprintf(stderr, "%s: no command after --\n", argv[0]);
        return 2;
    }
    *cmd++ = NULL;  /* layers end here */

    char *state = join(root, argv[2]);
    if (access(state, F_OK) != 0) {
        fprintf(stderr, "esxisim: not found: no simulated host at %s\n", root);
        _exit(2);
    }
    for (char **l = layers; *l; l++) {
        char *colon = strchr(*l, ':');
        if (!colon) {
            fprintf(stderr, "%s: a layer is NAME:TARGET[:private], not %s\n", argv[0], *l);
            return 2;
        }
        *colon = '\0';  /* NAME, then TARGET[:private] */
        cleanup_workdirs(root, *l);
    }
    makedirs("/vmfs");
    char *vmfs = join(root, "vmfs");
    do_mount(vmfs, "/vmfs", NULL, MS_BIND, NULL);
    set_hostname(root, argv[3]);

    char *data;
    for (char **l = layers; *l; l++) {
        const char *name = *l;
        char *target = *l + strlen(name) + 1;
        char *flag = strchr(target, ':');
        if (flag)
            *flag++ = '\0';
        if (!is_dir(target))
            continue;
        char *rl = join(root, "root"), *base = join(rl, name), *work, *lower, *upper = join(base, "upper");
        if (asprintf(&work, "%s/work.%d", base, (int)getpid()) < 0)
            return 1;
        makedirs(work);
        lower = target;
        if (flag && strcmp(flag, "private") == 0) {  /* nothing of this machine's TARGET shows through */
            lower = join(base, "empty");
            char *sshd = join(lower, "sshd");  /* the host's sshd (SSH-mode tests) */
            makedirs(sshd);
        }
        if (asprintf(&data, "lowerdir=%s,upperdir=%s,workdir=%s", lower, upper, work) < 0)
            return 1;
        do_mount("overlay", target, "overlay", 0, data);
    }

    char cwd[4096];
    if ((!getcwd(cwd, sizeof cwd) || chdir(cwd) != 0) && chdir("/") != 0)
        die("chdir", "/");
    default_signals();
    exec_path(cmd);
    fprintf(stderr, "sh: %s: %s\n", cmd[0], errno == ENOENT ? "not found" : strerror(errno));
    _exit(127);
}
