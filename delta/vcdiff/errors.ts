/** Stable codes so callers and tests can tell failure classes apart without parsing messages. */
export const E = {
  magic: 'vcdiff/bad-magic',
  unsupported: 'vcdiff/unsupported',
  truncated: 'vcdiff/truncated',
  varint: 'vcdiff/bad-varint',
  limit: 'vcdiff/limit-exceeded',
  window: 'vcdiff/bad-window',
  instruction: 'vcdiff/bad-instruction',
  address: 'vcdiff/bad-address',
  checksum: 'vcdiff/bad-checksum',
  codeTable: 'vcdiff/bad-code-table',
} as const

/**
 * Thrown by the sync parsers when the buffered bytes end early. The streaming driver catches it,
 * pulls `needed` bytes and retries; the in-memory driver turns it into a truncation error.
 */
export class NeedMore {
  readonly needed: number
  constructor(needed: number) {
    this.needed = needed
  }
}
