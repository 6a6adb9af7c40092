/* MQTT 5 request/response load generator for benchmarks/mqtt_scoring.py (libmosquitto, one thread).
 *
 *   mqtt_loadgen PORT TOPIC BODY_FILE WINDOW WARMUP_S DURATION_S
 *
 * Keeps WINDOW requests in flight (closed loop: each reply sends the next request): QoS 1, a response
 * topic of its own, the request's sequence number as correlation data, content type application/json.
 * Prints "go" when the measurement starts and, at the end, one JSON line like the Python generator's:
 * {"rps", "p50_ms", "p99_ms", "load_cpu"} (load_cpu: % of one core this process used meanwhile).
 * Built by mqtt_scoring.py with: cc -O2 -o mqtt_loadgen mqtt_loadgen.c -lmosquitto
 */
#include <mosquitto.h>
#include <mqtt_protocol.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

static const char *topic;
static const char *reply = "bench/load/response";
static char *body;
static int body_len;
static int window;
static double warmup, duration;
static double *sent_at;   /* by sequence number modulo SLOTS */
static double *latencies; /* of the measured round trips */
static long n_lat, cap_lat;
static long seq;
static double t_go, t_end;
static int measuring, stopping;
static struct rusage ru0;
#define SLOTS (1 << 20)

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void send_one(struct mosquitto *m) {
    char corr[24];
    int len = snprintf(corr, sizeof corr, "%ld", seq);
    mosquitto_property *props = NULL;
    mosquitto_property_add_string(&props, MQTT_PROP_RESPONSE_TOPIC, reply);
    mosquitto_property_add_binary(&props, MQTT_PROP_CORRELATION_DATA, corr, (uint16_t)len);
    mosquitto_property_add_string(&props, MQTT_PROP_CONTENT_TYPE, "application/json");
    sent_at[seq % SLOTS] = now();
    seq++;
    if (mosquitto_publish_v5(m, NULL, topic, body_len, body, 1, false, props) != MOSQ_ERR_SUCCESS) {
        fprintf(stderr, "publish failed\n");
        exit(1);
    }
    mosquitto_property_free_all(&props);
}

static void on_connect(struct mosquitto *m, void *u, int rc, int flags, const mosquitto_property *p) {
    if (rc) {
        fprintf(stderr, "connect refused: %s\n", mosquitto_reason_string(rc));
        exit(1);
    }
    mosquitto_subscribe(m, NULL, reply, 1);
}

static void on_subscribe(struct mosquitto *m, void *u, int mid, int n, const int *granted) {
    double t = now();
    t_go = t + warmup;
    t_end = t_go + duration;
    for (int i = 0; i < window; i++) send_one(m);
}

static void on_message(struct mosquitto *m, void *u, const struct mosquitto_message *msg, const mosquitto_property *p) {
    double t = now();
    void *corr = NULL;
    uint16_t len = 0;
    if (mosquitto_property_read_binary(p, MQTT_PROP_CORRELATION_DATA, &corr, &len, false) && corr) {
        char buf[24];
        memcpy(buf, corr, len < 23 ? len : 23);
        buf[len < 23 ? len : 23] = 0;
        free(corr);
        long s = atol(buf);
        if (!measuring && t >= t_go && !stopping) {
            measuring = 1;
            getrusage(RUSAGE_SELF, &ru0);
            t_go = t;
            printf("go\n");
            fflush(stdout);
        }
        if (measuring && n_lat < cap_lat) latencies[n_lat++] = t - sent_at[s % SLOTS];
    }
    if (measuring && t >= t_end && !stopping) {
        stopping = 1;
        t_end = t;
        mosquitto_disconnect(m);
        return;
    }
    if (!stopping) send_one(m);
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    if (argc != 7) {
        fprintf(stderr, "usage: %s PORT TOPIC BODY_FILE WINDOW WARMUP_S DURATION_S\n", argv[0]);
        return 2;
    }
    int port = atoi(argv[1]);
    topic = argv[2];
    FILE *f = fopen(argv[3], "rb");
    if (!f) {
        perror(argv[3]);
        return 2;
    }
    body = malloc(1 << 20);
    body_len = (int)fread(body, 1, 1 << 20, f);
    fclose(f);
    window = atoi(argv[4]);
    warmup = atof(argv[5]);
    duration = atof(argv[6]);
    sent_at = calloc(SLOTS, sizeof(double));
    cap_lat = 20000000;
    latencies = malloc(cap_lat * sizeof(double));

    mosquitto_lib_init();
    struct mosquitto *m = mosquitto_new("bench-load", true, NULL);
    mosquitto_int_option(m, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V5);
    mosquitto_int_option(m, MOSQ_OPT_TCP_NODELAY, 1);
    mosquitto_max_inflight_messages_set(m, 0);
    mosquitto_connect_v5_callback_set(m, on_connect);
    mosquitto_subscribe_callback_set(m, on_subscribe);
    mosquitto_message_v5_callback_set(m, on_message);
    if (mosquitto_connect_bind_v5(m, "127.0.0.1", port, 30, NULL, NULL) != MOSQ_ERR_SUCCESS) {
        fprintf(stderr, "cannot connect to 127.0.0.1:%d\n", port);
        return 1;
    }
    mosquitto_loop_forever(m, 1000, 1);
    struct rusage ru1;
    getrusage(RUSAGE_SELF, &ru1);
    double elapsed = t_end - t_go;
    double cpu = (ru1.ru_utime.tv_sec - ru0.ru_utime.tv_sec) + (ru1.ru_utime.tv_usec - ru0.ru_utime.tv_usec) / 1e6 +
                 (ru1.ru_stime.tv_sec - ru0.ru_stime.tv_sec) + (ru1.ru_stime.tv_usec - ru0.ru_stime.tv_usec) / 1e6;
    qsort(latencies, n_lat, sizeof(double), cmp);
    double p50 = n_lat ? latencies[(long)(0.5 * n_lat)] * 1000 : 0, p99 = n_lat ? latencies[(long)(0.99 * n_lat)] * 1000 : 0;
    printf("{\"rps\": %.0f, \"p50_ms\": %.2f, \"p99_ms\": %.2f, \"load_cpu\": %.0f}\n", elapsed > 0 ? n_lat / elapsed : 0,
           p50, p99, elapsed > 0 ? cpu / elapsed * 100 : 0);
    fflush(stdout);
    mosquitto_destroy(m);
    mosquitto_lib_cleanup();
    return 0;
}
