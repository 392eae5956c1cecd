import { valid as validSemver } from 'semver'
import { z } from 'zod'

/**
 * Artifact names: npm-like, lowercase, optionally scoped, bounded. The grammar rules out path tricks
 * (`..`, backslashes, empty segments) because names become R2 key segments.
 */
export const ArtifactName = z
  .string()
  .min(1)
  .max(128)
  .regex(
    /^(@[a-z0-9][a-z0-9._-]*\/)?[a-z0-9][a-z0-9._-]*$/,
    'lowercase letters, digits, . _ - and one optional @scope/',
  )
  .refine((name) => !name.split('/').some((part) => part === '.' || part === '..' || part.includes('..')), {
    message: 'no dot segments',
  })
export type ArtifactName = z.infer<typeof ArtifactName>

/**
 * Strict SemVer 2.0 (no leading `v`, no ranges, no `+build` metadata: it has no precedence and `+` is
 * ambiguous in URLs), bounded so it is safe as a key segment.
 */
export const Version = z
  .string()
  .min(5)
  .max(64)
  .refine((v) => validSemver(v) === v, { message: 'a strict semver version such as 1.2.3' })
export type Version = z.infer<typeof Version>

export const ChannelName = z
  .string()
  .min(1)
  .max(32)
  // Said in words: the bare pattern reached users as "must match pattern /^[a-z][a-z0-9-]*$/".
  .regex(/^[a-z][a-z0-9-]*$/, '1-32 of a-z, 0-9 and -, starting with a letter (e.g. stable)')
export type ChannelName = z.infer<typeof ChannelName>

export const Sha256Hex = z.string().regex(/^[0-9a-f]{64}$/, '64 lowercase hex digits')
export type Sha256Hex = z.infer<typeof Sha256Hex>

/** Sizes up to 2^53: JSON numbers stay exact and every length we allocate from is bounded elsewhere. */
/**
 * An integer in a path or query string: decimal digits only, no sign, exponent, hex, spaces or leading
 * zeros (z.coerce would take `0x1`, `1e0`, ` 1` and `01` as 1, so one value had many spellings).
 */
export function decimalParam(min: number, max: number) {
  return z
    .string()
    .regex(/^(0|[1-9][0-9]{0,15})$/, 'a decimal integer: digits only, without leading zeros')
    .transform(Number)
    .pipe(z.number().int().min(min).max(max))
}

export const ByteSize = z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER)

export const IsoDateTime = z.iso.datetime({ offset: true })

export const Base64 = z
  .string()
  .max(8192)
  .regex(/^[A-Za-z0-9+/]*={0,2}$/, 'standard base64')
