/* tcp: a network filter that upper-cases the data the client sends and
 * prepends "[c] " to the first data the upstream answers. */
#include "proxy_wasm.h"

PROXY_EXPORT(proxy_abi_version_0_2_1) void abi_version(void) {}
PROXY_EXPORT(proxy_on_context_create) void on_context_create(uint32_t id, uint32_t parent) {}
PROXY_EXPORT(proxy_on_vm_start) uint32_t on_vm_start(uint32_t root, uint32_t size) { return 1; }
PROXY_EXPORT(proxy_on_configure) uint32_t on_configure(uint32_t root, uint32_t size) { return 1; }
PROXY_EXPORT(proxy_on_new_connection) uint32_t on_new_connection(uint32_t ctx) { return PROXY_ACTION_CONTINUE; }

PROXY_EXPORT(proxy_on_downstream_data)
uint32_t on_downstream_data(uint32_t ctx, uint32_t size, uint32_t end_of_stream) {
  char *data = NULL;
  size_t n = 0;
  if (size == 0 || proxy_get_buffer_bytes(PROXY_BUFFER_DOWNSTREAM_DATA, 0, size, &data, &n) != PROXY_OK) {
    return PROXY_ACTION_CONTINUE;
  }
  for (size_t i = 0; i < n; i++) {
    if (data[i] >= 'a' && data[i] <= 'z') {
      data[i] -= 'a' - 'A';
    }
  }
  proxy_set_buffer_bytes(PROXY_BUFFER_DOWNSTREAM_DATA, 0, n, data, n);
  free(data);
  return PROXY_ACTION_CONTINUE;
}

PROXY_EXPORT(proxy_on_upstream_data)
uint32_t on_upstream_data(uint32_t ctx, uint32_t size, uint32_t end_of_stream) {
  static const char prefix[] = "[c] ";
  proxy_set_buffer_bytes(PROXY_BUFFER_UPSTREAM_DATA, 0, 0, prefix, sizeof prefix - 1);
  return PROXY_ACTION_CONTINUE;
}
