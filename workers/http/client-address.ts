import {
  convertIPv4BinaryToString,
  convertIPv4MappedIPv6ToIPv4,
  convertIPv6BinaryToString,
  convertIPv6ToBinary,
  isIPv4MappedIPv6,
} from 'hono/utils/ipaddr'

/**
 * The key a per-address limit counts a client under. An IPv4 address is itself; an IPv6 address is
 * its /64, because an ISP hands every subscriber at least a /64 and the host may pick any of its 2^64
 * interface addresses per request: counted by full address, one client would get 2^64 budgets.
 * An IPv4-mapped IPv6 address counts as its IPv4 address. A value that is not an address (only in
 * local runs: Cloudflare sets cf-connecting-ip itself) is its own key.
 */
export function addressLimitKey(address: string): string {
  if (!address.includes(':')) return address
  let bits: bigint
  try {
    bits = convertIPv6ToBinary(address)
  } catch {
    return address
  }
  if (isIPv4MappedIPv6(bits)) return convertIPv4BinaryToString(convertIPv4MappedIPv6ToIPv4(bits))
  return `${convertIPv6BinaryToString((bits >> 64n) << 64n)}/64`
}
