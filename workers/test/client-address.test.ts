import { describe, expect, it } from 'vitest'
import { addressLimitKey } from '../http/client-address.ts'

describe('addressLimitKey', () => {
  it('keys IPv4 by the address and IPv6 by its /64, whatever the spelling', () => {
    expect(addressLimitKey('198.51.100.7')).toBe('198.51.100.7')
    const key = addressLimitKey('2001:db8:7:7::1')
    expect(key).toBe('2001:db8:7:7::/64')
    for (const other of ['2001:db8:7:7:ffff:1:2:3', '2001:0DB8:0007:0007:0:0:0:9', '2001:db8:7:7::a:b']) {
      expect(addressLimitKey(other), other).toBe(key)
    }
    expect(addressLimitKey('2001:db8:7:8::1')).not.toBe(key)
  })

  it('keys an IPv4-mapped IPv6 address as its IPv4 address, and anything else as itself', () => {
    expect(addressLimitKey('::ffff:198.51.100.7')).toBe('198.51.100.7')
    expect(addressLimitKey('not:an:address')).toBe('not:an:address')
    expect(addressLimitKey('unknown')).toBe('unknown')
  })
})
