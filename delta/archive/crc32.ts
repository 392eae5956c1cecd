/**
 * CRC-32 (IEEE 802.3, the polynomial gzip and zip use). delta/stream has CRC-32C, which is a different
 * polynomial, so gzip trailers and zip headers cannot be checked with it. The implementation is the
 * approx container's word-sliced one (a byte-at-a-time loop here cost ≈0.2 s per 64 MiB at apply).
 */
export { crc32, crc32Update } from '../approx/crc32.ts'
