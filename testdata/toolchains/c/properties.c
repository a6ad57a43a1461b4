/* properties: reads its configuration in proxy_on_configure, logs it, and
 * on each request adds headers from the configuration and from the
 * request.path and plugin_name properties, and counts requests in the
 * counter compat_c_requests. */
#include "proxy_wasm.h"

static char *config = NULL;
static uint32_t requests;

PROXY_EXPORT(proxy_abi_version_0_2_1) void abi_version(void) {}
PROXY_EXPORT(proxy_on_context_create) void on_context_create(uint32_t id, uint32_t parent) {}
PROXY_EXPORT(proxy_on_vm_start) uint32_t on_vm_start(uint32_t root, uint32_t size) { return 1; }

PROXY_EXPORT(proxy_on_configure)
uint32_t on_configure(uint32_t root, uint32_t size) {
  char *data = NULL;
  size_t n = 0;
  free(config);
  config = NULL;
  if (size > 0 && proxy_get_buffer_bytes(PROXY_BUFFER_PLUGIN_CONFIGURATION, 0, size, &data, &n) != PROXY_OK) {
    return 0;
  }
  config = malloc(n + 1);
  if (config == NULL) {
    return 0;
  }
  if (n > 0) {
    memcpy(config, data, n);
  }
  config[n] = 0;
  free(data);
  static const char prefix[] = "c properties: configured with ";
  char *msg = malloc(sizeof prefix + n);
  if (msg != NULL) {
    memcpy(msg, prefix, sizeof prefix - 1);
    memcpy(msg + sizeof prefix - 1, config, n + 1);
    log_str(PROXY_LOG_INFO, msg);
    free(msg);
  }
  return proxy_define_metric(PROXY_METRIC_COUNTER, "compat_c_requests", 17, &requests) == PROXY_OK;
}

/* add_property adds header key with the value of the property at path
 * (segments separated by NULs, path_size bytes), or "absent". */
static void add_property(const char *key, const char *path, size_t path_size) {
  char *value = NULL;
  size_t n = 0;
  if (proxy_get_property(path, path_size, &value, &n) != PROXY_OK) {
    add_header(PROXY_MAP_REQUEST_HEADERS, key, "absent");
    return;
  }
  proxy_add_header_map_value(PROXY_MAP_REQUEST_HEADERS, key, strlen(key), value, n);
  free(value);
}

PROXY_EXPORT(proxy_on_request_headers)
uint32_t on_request_headers(uint32_t ctx, uint32_t headers, uint32_t end_of_stream) {
  add_header(PROXY_MAP_REQUEST_HEADERS, "x-compat-config", config != NULL ? config : "");
  add_property("x-compat-path", "request\0path", 12);
  add_property("x-compat-plugin-name", "plugin_name", 11);
  proxy_increment_metric(requests, 1);
  return PROXY_ACTION_CONTINUE;
}
