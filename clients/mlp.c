/* A reference client of backprop-check's process protocol (docs/protocol.md), in C: the MLP
 * (Linear -> activation per layer), mean squared error, SGD with momentum, forward and backward
 * written out by hand.
 *
 *     cc -O2 -o mlp clients/mlp.c -lm
 *     backprop-check run SPEC --impl "exec:./mlp"
 *
 * Supports: network.sizes with per-neuron biases, activations tanh, sigmoid, relu, identity,
 * loss "mse" (reduction mean), optimizer sgd (lr, momentum, dampening), float64 or float32 runs
 * (computed in double, answered in the run's dtype). Anything else is answered with an "error".
 * Compiled with -DPLANTED_BUG, the last layer's bias forgets its momentum (its buffer is the
 * gradient alone at every step): the harness catches it at iteration 1, stage optim.
 *
 * Its JSON reading is a scanner for the harness's compact headers, not a JSON parser: enough for
 * a reference client, and short.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAXL 16     /* layers */
#define MAXA 64     /* arrays in one message */

typedef struct { char name[128]; char dtype[16]; int ndim; long shape[8]; long n; unsigned char *data; } Array;
typedef struct { char *header; int count; Array a[MAXA]; } Message;

static int L, sizes[MAXL + 1], act[MAXL], f32, momentum_on;
static double lr, momentum, dampening;
static double *W[MAXL], *B[MAXL], *VW[MAXL], *VB[MAXL];  /* weights (out, in), biases, momentum buffers */
static int have_buf;                                     /* the buffers exist (after the first step) */
enum { TANH, SIGMOID, RELU, IDENTITY };

/* --- reading and writing messages ------------------------------------------------------------ */

static void read_exact(void *p, size_t n) {
    if (n && fread(p, 1, n, stdin) != n) exit(0);  /* the harness went away: nothing more to do */
}

static const char *after(const char *s, const char *key) {  /* just past `key` in s, or NULL */
    const char *p = strstr(s, key);
    return p ? p + strlen(key) : NULL;
}

static void read_message(Message *m) {
    uint32_t h;
    read_exact(&h, 4);                      /* little-endian, as the machines this runs on */
    m->header = malloc(h + 1);
    read_exact(m->header, h);
    m->header[h] = 0;
    m->count = 0;
    const char *p = after(m->header, "\"arrays\":[");
    while (p && (p = after(p, "{\"name\":\"")) && m->count < MAXA) {
        Array *a = &m->a[m->count++];
        sscanf(p, "%127[^\"]", a->name);
        p = after(p, "\"dtype\":\"");
        sscanf(p, "%15[^\"]", a->dtype);
        p = after(p, "\"shape\":[");
        a->ndim = 0; a->n = 1;
        while (*p != ']') {
            a->shape[a->ndim] = strtol(p, (char **)&p, 10);
            a->n *= a->shape[a->ndim++];
            if (*p == ',') p++;
        }
    }
    for (int i = 0; i < m->count; i++) {
        Array *a = &m->a[i];
        size_t item = strcmp(a->dtype, "float32") == 0 ? 4 : strcmp(a->dtype, "bool") == 0 ? 1 : 8;
        a->data = malloc(a->n * item + 1);
        read_exact(a->data, a->n * item);
    }
}

static void free_message(Message *m) {
    for (int i = 0; i < m->count; i++) free(m->a[i].data);
    free(m->header);
}

static Array *find(Message *m, const char *name) {
    for (int i = 0; i < m->count; i++) if (strcmp(m->a[i].name, name) == 0) return &m->a[i];
    return NULL;
}

static double get(Array *a, long i) {  /* element i as a double, whatever its dtype */
    if (strcmp(a->dtype, "float32") == 0) return ((float *)a->data)[i];
    if (strcmp(a->dtype, "int64") == 0) return (double)((int64_t *)a->data)[i];
    return ((double *)a->data)[i];
}

/* An answer is built in two buffers: the header's "arrays" entries and the arrays' bytes. */
static char ahead[1 << 16]; static size_t ahead_len;
static unsigned char *body; static size_t body_len, body_cap;

static void add(const char *name, const double *v, long rows, long cols, int ndim) {
    long n = rows * cols;
    size_t item = f32 ? 4 : 8;
    ahead_len += snprintf(ahead + ahead_len, sizeof ahead - ahead_len, "%s{\"name\":\"%s\",\"dtype\":\"%s\",\"shape\":[",
                          ahead_len ? "," : "", name, f32 ? "float32" : "float64");
    if (ndim == 2) ahead_len += snprintf(ahead + ahead_len, sizeof ahead - ahead_len, "%ld,%ld]}", rows, cols);
    else if (ndim == 1) ahead_len += snprintf(ahead + ahead_len, sizeof ahead - ahead_len, "%ld]}", n);
    else ahead_len += snprintf(ahead + ahead_len, sizeof ahead - ahead_len, "]}");
    if (body_len + n * item > body_cap) { body_cap = 2 * (body_len + n * item); body = realloc(body, body_cap); }
    for (long i = 0; i < n; i++) {
        if (f32) { float f = (float)v[i]; memcpy(body + body_len + 4 * i, &f, 4); }
        else memcpy(body + body_len + 8 * i, &v[i], 8);
    }
    body_len += n * item;
}

static double seconds;  /* the last step's own computing time, answered in its header (scripts/bench.py) */

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

static void send(const char *message, const char *text) {
    static char header[1 << 17];
    uint32_t h = text ? (uint32_t)snprintf(header, sizeof header, "{\"message\":\"%s\",\"text\":\"%s\",\"arrays\":[]}", message, text)
                      : (uint32_t)snprintf(header, sizeof header, "{\"message\":\"%s\",\"seconds\":%.9f,\"arrays\":[%.*s]}",
                                           message, seconds, (int)ahead_len, ahead);
    fwrite(&h, 4, 1, stdout);
    fwrite(header, 1, h, stdout);
    fwrite(body, 1, body_len, stdout);
    fflush(stdout);
    ahead_len = body_len = 0;
}

static void fail(const char *text) { send("error", text); exit(1); }

/* --- the description (init) -------------------------------------------------------------------- */

static double number(const char *section, const char *key, double otherwise) {
    const char *p = after(section, key);
    return p ? strtod(p, NULL) : otherwise;
}

static void configure(const char *h) {
    const char *p = after(h, "\"sizes\":[");
    if (!p) fail("this client runs network.sizes (the MLP form), not a layer list");
    for (L = -1; *p != ']' && L < MAXL; L++) { sizes[L + 1] = strtol(p, (char **)&p, 10); if (*p == ',') p++; }
    const char *a = after(h, "\"activation\":[");
    for (int k = 0; k < L; k++) {
        a = after(a, "\"");
        act[k] = !strncmp(a, "tanh\"", 5) ? TANH : !strncmp(a, "sigmoid\"", 8) ? SIGMOID
               : !strncmp(a, "relu\"", 5) ? RELU : !strncmp(a, "identity\"", 9) ? IDENTITY : -1;
        if (act[k] < 0) fail("activation: this client has tanh, sigmoid, relu, identity");
        a = after(a, "\"");
    }
    if (!strstr(h, "\"bias\":\"per-neuron\"")) fail("network.bias: this client has per-neuron biases only");
    if (!strstr(h, "\"loss\":\"mse\"") || !strstr(h, "\"reduction\":\"mean\"")) fail("network.loss: this client has mse (mean) only");
    const char *o = after(h, "\"optimizer\":{");
    if (!o || strncmp(o, "\"name\":\"sgd\"", 12)) fail("optimizer.name: this client has sgd only");
    if (number(o, "\"weight_decay\":", 0) != 0 || strstr(o, "\"nesterov\":true"))
        fail("optimizer: this client has no weight_decay or nesterov");
    if (!strstr(h, "\"scheduler\":null") || !strstr(h, "\"clip\":null")) fail("this client has no scheduler or clipping");
    lr = number(o, "\"lr\":", 0);
    momentum = number(o, "\"momentum\":", 0);
    dampening = number(o, "\"dampening\":", 0);
    momentum_on = momentum != 0;
    f32 = strstr(after(h, "\"run\":{"), "\"dtype\":\"float32\"") != NULL;
    for (int k = 0; k < L; k++) {
        size_t n = (size_t)sizes[k + 1] * sizes[k];
        W[k] = calloc(n, 8); VW[k] = calloc(n, 8);
        B[k] = calloc(sizes[k + 1], 8); VB[k] = calloc(sizes[k + 1], 8);
    }
}

static void load(Message *m) {  /* state_dict/ and optimizer_state/ entries, where given */
    char name[160];
    for (int k = 0; k < L; k++) {
        double *to[4] = {W[k], B[k], VW[k], VB[k]};
        const char *fmt[4] = {"state_dict/layers.%d.weight", "state_dict/layers.%d.bias",
                              "optimizer_state/layers.%d.weight.momentum_buffer", "optimizer_state/layers.%d.bias.momentum_buffer"};
        for (int j = 0; j < 4; j++) {
            snprintf(name, sizeof name, fmt[j], k);
            Array *a = find(m, name);
            if (!a) continue;
            for (long i = 0; i < a->n; i++) to[j][i] = get(a, i);
            if (j >= 2) have_buf = 1;
        }
    }
}

/* --- one training step ------------------------------------------------------------------------- */

static double f(int kind, double z) {
    return kind == TANH ? tanh(z) : kind == SIGMOID ? 1 / (1 + exp(-z)) : kind == RELU ? (z > 0 ? z : 0) : z;
}

static double df(int kind, double z, double a) {  /* the derivative, from the input z and output a */
    return kind == TANH ? 1 - a * a : kind == SIGMOID ? a * (1 - a) : kind == RELU ? (z > 0) : 1;
}

static void step(Message *m) {
    Array *xa = find(m, "x"), *ya = find(m, "y");
    if (!xa || !ya) fail("step without x or y");
    long N = xa->shape[0];
    double start = now();
    double *a[MAXL + 1], *z[MAXL + 1], *d[MAXL + 1], *gW[MAXL], *gB[MAXL];
    a[0] = malloc(N * sizes[0] * 8);
    for (long i = 0; i < N * sizes[0]; i++) a[0][i] = get(xa, i);
    for (int k = 0; k < L; k++) {  /* forward: z = a W^T + b, a = f(z) */
        int in = sizes[k], out = sizes[k + 1];
        z[k + 1] = malloc(N * out * 8); a[k + 1] = malloc(N * out * 8); d[k + 1] = malloc(N * out * 8);
        for (long n = 0; n < N; n++)
            for (int o = 0; o < out; o++) {
                double s = B[k][o];
                for (int i = 0; i < in; i++) s += a[k][n * in + i] * W[k][(long)o * in + i];
                z[k + 1][n * out + o] = s;
                a[k + 1][n * out + o] = f(act[k], s);
            }
    }
    int out = sizes[L];
    double loss = 0, count = (double)N * out;
    for (long i = 0; i < N * out; i++) {  /* mse (mean): dE/da = 2 (a - y) / count */
        double e = a[L][i] - get(ya, i);
        loss += e * e / count;
        d[L][i] = 2 * e / count;
    }
    for (int k = L; k >= 1; k--) {  /* backward: delta = dE/da * f'(z); grads; dE/da of the layer below */
        int in = sizes[k - 1], o_n = sizes[k];
        for (long i = 0; i < N * o_n; i++) d[k][i] *= df(act[k - 1], z[k][i], a[k][i]);
        gW[k - 1] = calloc((size_t)o_n * in, 8); gB[k - 1] = calloc(o_n, 8);
        for (long n = 0; n < N; n++)
            for (int o = 0; o < o_n; o++) {
                double dv = d[k][n * o_n + o];
                gB[k - 1][o] += dv;
                for (int i = 0; i < in; i++) gW[k - 1][(long)o * in + i] += dv * a[k - 1][n * in + i];
            }
        if (k > 1) {
            memset(d[k - 1], 0, N * in * 8);
            for (long n = 0; n < N; n++)
                for (int o = 0; o < o_n; o++)
                    for (int i = 0; i < in; i++) d[k - 1][n * in + i] += d[k][n * o_n + o] * W[k - 1][(long)o * in + i];
        }
    }
    char name[160];
    add("output", a[L], N, out, 2);
    add("loss", &loss, 1, 1, 0);
    for (int k = 0; k < L; k++) {
        snprintf(name, sizeof name, "deltas/layers.%d", k); add(name, d[k + 1], N, sizes[k + 1], 2);
        snprintf(name, sizeof name, "grads/layers.%d.weight", k); add(name, gW[k], sizes[k + 1], sizes[k], 2);
        snprintf(name, sizeof name, "grads/layers.%d.bias", k); add(name, gB[k], 1, sizes[k + 1], 1);
    }
    for (int k = 0; k < L; k++) {  /* torch.optim.SGD: buf = g (first step), else momentum buf + (1 - dampening) g */
        long nw = (long)sizes[k + 1] * sizes[k];
        double *p[2] = {W[k], B[k]}, *g[2] = {gW[k], gB[k]}, *v[2] = {VW[k], VB[k]};
        long len[2] = {nw, sizes[k + 1]};
        for (int j = 0; j < 2; j++)
            for (long i = 0; i < len[j]; i++) {
                double u = g[j][i];
                if (momentum_on) {
                    v[j][i] = have_buf ? momentum * v[j][i] + (1 - dampening) * g[j][i] : g[j][i];
#ifdef PLANTED_BUG
                    if (k == L - 1 && j == 1) v[j][i] = g[j][i];  /* the last bias forgets its momentum */
#endif
                    u = v[j][i];
                }
                p[j][i] -= lr * u;
            }
    }
    have_buf = 1;
    seconds = now() - start;  /* forward, backward, update: what the program would do without the harness */
    for (int k = 0; k < L; k++) {
        snprintf(name, sizeof name, "state_dict/layers.%d.weight", k); add(name, W[k], sizes[k + 1], sizes[k], 2);
        snprintf(name, sizeof name, "state_dict/layers.%d.bias", k); add(name, B[k], 1, sizes[k + 1], 1);
        if (!momentum_on) continue;
        snprintf(name, sizeof name, "optimizer_state/layers.%d.weight.momentum_buffer", k); add(name, VW[k], sizes[k + 1], sizes[k], 2);
        snprintf(name, sizeof name, "optimizer_state/layers.%d.bias.momentum_buffer", k); add(name, VB[k], 1, sizes[k + 1], 1);
    }
    send("result", NULL);
    for (int k = 0; k <= L; k++) { free(a[k]); if (k) { free(z[k]); free(d[k]); free(gW[k - 1]); free(gB[k - 1]); } }
}

int main(void) {
    for (;;) {
        Message m;
        read_message(&m);
        if (strstr(m.header, "{\"message\":\"init\"") == m.header) { configure(m.header); load(&m); send("ready", NULL); }
        else if (strstr(m.header, "{\"message\":\"load\"") == m.header) { load(&m); send("ready", NULL); }
        else if (strstr(m.header, "{\"message\":\"step\"") == m.header) step(&m);
        else if (strstr(m.header, "{\"message\":\"close\"") == m.header) return 0;
        else fail("unknown message");
        free_message(&m);
    }
}
