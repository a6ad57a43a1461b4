/*
 * proxy_wasm.h: the part of the proxy-wasm ABI (0.2.1) the C compatibility
 * plugins use, written from the specification, with no SDK behind it.
 *
 * Every host function lives in the "env" module and returns a status (0 is
 * OK). Memory the host hands back (header values, buffers, properties) is
 * allocated with the plugin's exported malloc, so it is the plugin's to
 * free. Callbacks are exported by name with PROXY_EXPORT; the build exports
 * malloc and free from wasi-libc.
 */
#ifndef WASM_CALLOUT_PROXY_WASM_H
#define WASM_CALLOUT_PROXY_WASM_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define PROXY_IMPORT(name) __attribute__((import_module("env"), import_name(#name)))
#define PROXY_EXPORT(name) __attribute__((export_name(#name)))

typedef uint32_t proxy_status_t;

enum { PROXY_OK = 0, PROXY_NOT_FOUND = 1 };
enum { PROXY_LOG_TRACE, PROXY_LOG_DEBUG, PROXY_LOG_INFO, PROXY_LOG_WARN, PROXY_LOG_ERROR, PROXY_LOG_CRITICAL };
enum { PROXY_ACTION_CONTINUE = 0, PROXY_ACTION_PAUSE = 1 };
enum {
  PROXY_MAP_REQUEST_HEADERS = 0,
  PROXY_MAP_REQUEST_TRAILERS = 1,
  PROXY_MAP_RESPONSE_HEADERS = 2,
  PROXY_MAP_RESPONSE_TRAILERS = 3,
};
enum {
  PROXY_BUFFER_REQUEST_BODY = 0,
  PROXY_BUFFER_RESPONSE_BODY = 1,
  PROXY_BUFFER_DOWNSTREAM_DATA = 2,
  PROXY_BUFFER_UPSTREAM_DATA = 3,
  PROXY_BUFFER_VM_CONFIGURATION = 6,
  PROXY_BUFFER_PLUGIN_CONFIGURATION = 7,
};
enum { PROXY_METRIC_COUNTER = 0, PROXY_METRIC_GAUGE = 1, PROXY_METRIC_HISTOGRAM = 2 };

PROXY_IMPORT(proxy_log)
proxy_status_t proxy_log(uint32_t level, const char *msg, size_t msg_size);

PROXY_IMPORT(proxy_get_header_map_value)
proxy_status_t proxy_get_header_map_value(uint32_t map, const char *key, size_t key_size,
                                          char **value, size_t *value_size);
PROXY_IMPORT(proxy_add_header_map_value)
proxy_status_t proxy_add_header_map_value(uint32_t map, const char *key, size_t key_size,
                                          const char *value, size_t value_size);
PROXY_IMPORT(proxy_replace_header_map_value)
proxy_status_t proxy_replace_header_map_value(uint32_t map, const char *key, size_t key_size,
                                              const char *value, size_t value_size);
PROXY_IMPORT(proxy_remove_header_map_value)
proxy_status_t proxy_remove_header_map_value(uint32_t map, const char *key, size_t key_size);

PROXY_IMPORT(proxy_get_buffer_bytes)
proxy_status_t proxy_get_buffer_bytes(uint32_t buffer, size_t start, size_t max_size,
                                      char **data, size_t *size);
PROXY_IMPORT(proxy_set_buffer_bytes)
proxy_status_t proxy_set_buffer_bytes(uint32_t buffer, size_t start, size_t size,
                                      const char *data, size_t data_size);

PROXY_IMPORT(proxy_send_local_response)
proxy_status_t proxy_send_local_response(uint32_t status_code, const char *details, size_t details_size,
                                         const char *body, size_t body_size,
                                         const char *headers, size_t headers_size, int32_t grpc_status);

PROXY_IMPORT(proxy_get_property)
proxy_status_t proxy_get_property(const char *path, size_t path_size, char **value, size_t *value_size);

PROXY_IMPORT(proxy_define_metric)
proxy_status_t proxy_define_metric(uint32_t type, const char *name, size_t name_size, uint32_t *id);
PROXY_IMPORT(proxy_increment_metric)
proxy_status_t proxy_increment_metric(uint32_t id, int64_t offset);

/* Helpers over NUL-terminated strings. */

static inline void log_str(uint32_t level, const char *msg) { proxy_log(level, msg, strlen(msg)); }

static inline void add_header(uint32_t map, const char *key, const char *value) {
  proxy_add_header_map_value(map, key, strlen(key), value, strlen(value));
}

static inline void replace_header(uint32_t map, const char *key, const char *value) {
  proxy_replace_header_map_value(map, key, strlen(key), value, strlen(value));
}

static inline void remove_header(uint32_t map, const char *key) {
  proxy_remove_header_map_value(map, key, strlen(key));
}

/* get_header returns a malloc'd, NUL-terminated copy of a header's value,
 * or NULL when it is absent. */
static inline char *get_header(uint32_t map, const char *key) {
  char *value = NULL;
  size_t size = 0;
  if (proxy_get_header_map_value(map, key, strlen(key), &value, &size) != PROXY_OK) {
    return NULL;
  }
  char *out = malloc(size + 1);
  if (out == NULL) {
    free(value);
    return NULL;
  }
  if (size > 0) {
    memcpy(out, value, size);
  }
  out[size] = 0;
  free(value);
  return out;
}

/* Pair serialization (spec "Header map / pairs"): a u32 count, then each
 * pair's key and value sizes as u32, then every key and value followed by
 * a NUL. serialize_pair writes one pair into out, which must hold
 * 4 + 8 + strlen(key) + strlen(value) + 2 bytes, and returns the size. */
static inline size_t serialize_pair(char *out, const char *key, const char *value) {
  uint32_t n = 1, k = (uint32_t)strlen(key), v = (uint32_t)strlen(value);
  memcpy(out, &n, 4);
  memcpy(out + 4, &k, 4);
  memcpy(out + 8, &v, 4);
  memcpy(out + 12, key, k + 1);
  memcpy(out + 12 + k + 1, value, v + 1);
  return 12 + k + v + 2;
}

#endif
