/* headers: adds, replaces and removes request headers and adds a response
 * header. */
#include "proxy_wasm.h"

PROXY_EXPORT(proxy_abi_version_0_2_1) void abi_version(void) {}
PROXY_EXPORT(proxy_on_context_create) void on_context_create(uint32_t id, uint32_t parent) {}
PROXY_EXPORT(proxy_on_vm_start) uint32_t on_vm_start(uint32_t root, uint32_t size) { return 1; }
PROXY_EXPORT(proxy_on_configure) uint32_t on_configure(uint32_t root, uint32_t size) { return 1; }

PROXY_EXPORT(proxy_on_request_headers)
uint32_t on_request_headers(uint32_t ctx, uint32_t headers, uint32_t end_of_stream) {
  add_header(PROXY_MAP_REQUEST_HEADERS, "x-compat-toolchain", "c");
  replace_header(PROXY_MAP_REQUEST_HEADERS, "x-compat-replace", "c");
  remove_header(PROXY_MAP_REQUEST_HEADERS, "x-compat-remove");
  return PROXY_ACTION_CONTINUE;
}

PROXY_EXPORT(proxy_on_response_headers)
uint32_t on_response_headers(uint32_t ctx, uint32_t headers, uint32_t end_of_stream) {
  add_header(PROXY_MAP_RESPONSE_HEADERS, "x-compat-response", "c");
  return PROXY_ACTION_CONTINUE;
}
