/* local_reply: answers requests whose path starts with /deny with a 403
 * local response that carries a header and a body; lets others through. */
#include "proxy_wasm.h"

PROXY_EXPORT(proxy_abi_version_0_2_1) void abi_version(void) {}
PROXY_EXPORT(proxy_on_context_create) void on_context_create(uint32_t id, uint32_t parent) {}
PROXY_EXPORT(proxy_on_vm_start) uint32_t on_vm_start(uint32_t root, uint32_t size) { return 1; }
PROXY_EXPORT(proxy_on_configure) uint32_t on_configure(uint32_t root, uint32_t size) { return 1; }

PROXY_EXPORT(proxy_on_request_headers)
uint32_t on_request_headers(uint32_t ctx, uint32_t headers, uint32_t end_of_stream) {
  char *path = get_header(PROXY_MAP_REQUEST_HEADERS, ":path");
  int deny = path != NULL && strncmp(path, "/deny", 5) == 0;
  free(path);
  if (!deny) {
    return PROXY_ACTION_CONTINUE;
  }
  static const char details[] = "compat_denied";
  static const char body[] = "denied by c\n";
  char pairs[64];
  size_t pairs_size = serialize_pair(pairs, "x-compat-denied", "c");
  proxy_send_local_response(403, details, sizeof details - 1, body, sizeof body - 1, pairs, pairs_size, -1);
  return PROXY_ACTION_PAUSE;
}
