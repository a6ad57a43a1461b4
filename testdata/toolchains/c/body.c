/* body: buffers each body to its end, then upper-cases the request body
 * (replacing it whole) and prepends "[c] " to the response body. */
#include "proxy_wasm.h"

PROXY_EXPORT(proxy_abi_version_0_2_1) void abi_version(void) {}
PROXY_EXPORT(proxy_on_context_create) void on_context_create(uint32_t id, uint32_t parent) {}
PROXY_EXPORT(proxy_on_vm_start) uint32_t on_vm_start(uint32_t root, uint32_t size) { return 1; }
PROXY_EXPORT(proxy_on_configure) uint32_t on_configure(uint32_t root, uint32_t size) { return 1; }

PROXY_EXPORT(proxy_on_request_body)
uint32_t on_request_body(uint32_t ctx, uint32_t size, uint32_t end_of_stream) {
  if (!end_of_stream) {
    return PROXY_ACTION_PAUSE; /* buffer until the whole body is here */
  }
  char *data = NULL;
  size_t n = 0;
  if (proxy_get_buffer_bytes(PROXY_BUFFER_REQUEST_BODY, 0, size, &data, &n) != PROXY_OK) {
    return PROXY_ACTION_CONTINUE; /* an empty body */
  }
  for (size_t i = 0; i < n; i++) {
    if (data[i] >= 'a' && data[i] <= 'z') {
      data[i] -= 'a' - 'A';
    }
  }
  if (proxy_set_buffer_bytes(PROXY_BUFFER_REQUEST_BODY, 0, n, data, n) != PROXY_OK) {
    log_str(PROXY_LOG_ERROR, "c body: replacing the request body failed");
  }
  free(data);
  return PROXY_ACTION_CONTINUE;
}

PROXY_EXPORT(proxy_on_response_body)
uint32_t on_response_body(uint32_t ctx, uint32_t size, uint32_t end_of_stream) {
  if (!end_of_stream) {
    return PROXY_ACTION_PAUSE;
  }
  static const char prefix[] = "[c] ";
  if (proxy_set_buffer_bytes(PROXY_BUFFER_RESPONSE_BODY, 0, 0, prefix, sizeof prefix - 1) != PROXY_OK) {
    log_str(PROXY_LOG_ERROR, "c body: prepending to the response body failed");
  }
  return PROXY_ACTION_CONTINUE;
}
