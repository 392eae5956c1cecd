import { z } from 'zod'
import { IsoDateTime, Sha256Hex } from './common.ts'
import { Ed25519PublicKey } from './ed25519-public-key.ts'
import { MAX_SIGNATURES, signedEnvelope } from './manifest.ts'

/**
 * Root metadata (ADR 0035), after TUF's root role: which keys devices trust for what, and how many of
 * them must agree. A device ships with one root (config `root`) and follows the chain of later roots
 * the edge serves, each signed by enough keys of the root before it and of itself, so maintainers can
 * rotate or revoke keys and raise thresholds without touching a device's config.
 */

/** Most keys one root may list; a few per role in practice. */
export const MAX_ROOT_KEYS = 16

/** The highest version a root may have; also the bound of the edge's `/v1/roots/:version` parameter. */
export const MAX_ROOT_VERSION = 1_000_000

/** A role: the keys that may sign for it and how many distinct ones must. */
export const RootRole = z
  .strictObject({
    keyids: z.array(Sha256Hex).min(1).max(MAX_ROOT_KEYS),
    threshold: z.number().int().min(1).max(MAX_ROOT_KEYS),
  })
  .refine((role) => new Set(role.keyids).size === role.keyids.length, 'keyids must not repeat')
  .refine((role) => role.threshold <= role.keyids.length, 'threshold is above the number of keyids')
  .refine(
    (role) => role.threshold <= MAX_SIGNATURES,
    `threshold is above ${MAX_SIGNATURES}, the most signatures a signed document carries: nothing could ever meet it`,
  )
export type RootRole = z.infer<typeof RootRole>

/** The edge's index key signs alone (one Worker secret), so its role has no threshold. */
export const IndexRole = z
  .strictObject({ keyids: z.array(Sha256Hex).min(1).max(8) })
  .refine((role) => new Set(role.keyids).size === role.keyids.length, 'keyids must not repeat')
export type IndexRole = z.infer<typeof IndexRole>

export const RootStatement = z
  .strictObject({
    /** Its own type: a manifest or a yank statement signed by a root key never parses as a root. */
    _type: z.literal('deltaport/root'),
    /** 1 for the first root; each later root is exactly one more. */
    version: z.number().int().min(1).max(MAX_ROOT_VERSION),
    /** After this instant the newest root a device holds stops vouching for anything (freeze). */
    expires: IsoDateTime,
    /** Every key a role names: raw 32-byte Ed25519 public keys (base64) by keyid; small-order ones refused. */
    keys: z.record(Sha256Hex, z.strictObject({ publicKey: Ed25519PublicKey })),
    roles: z.strictObject({
      /** Signs the next root. */
      root: RootRole,
      /** Sign manifests and yank statements. */
      maintainers: RootRole,
      /** The edge's INDEX_SIGNING_KEY: index statements and rollout answers (ADR 0032, 0034). */
      index: IndexRole.optional(),
    }),
  })
  .refine((root) => Object.keys(root.keys).length <= MAX_ROOT_KEYS, `at most ${MAX_ROOT_KEYS} keys`)
  .refine(
    (root) => rolesOf(root).every((keyid) => keyid in root.keys),
    'every keyid a role names must be listed in keys',
  )
export type RootStatement = z.infer<typeof RootStatement>

function rolesOf(root: { roles: { root: RootRole; maintainers: RootRole; index?: IndexRole | undefined } }) {
  return [...root.roles.root.keyids, ...root.roles.maintainers.keyids, ...(root.roles.index?.keyids ?? [])]
}

export const SignedRoot = signedEnvelope(RootStatement)
export type SignedRoot = z.infer<typeof SignedRoot>

/** Upper bound on a root document's JSON; the edge refuses larger bodies before parsing. */
export const MAX_ROOT_BYTES = 32 * 1024
