import { z } from 'zod'
import { ArtifactName, IsoDateTime, Sha256Hex, Version } from './common.ts'
import { signedEnvelope } from './manifest.ts'

/**
 * A maintainer's signed word that a version is yanked (or restored): what lets an agent move a device
 * back off a bad release, which an unsigned index must never be able to do (ADR 0025). Signed like a
 * manifest (Ed25519 over the canonical JSON), with its own `_type` so a signature over one kind of
 * document can never be passed off as the other.
 */
export const YankStatement = z.strictObject({
  _type: z.literal('deltaport/yank'),
  name: ArtifactName,
  version: Version,
  /** sha256 of the version's bytes: the statement is about exactly those (mix-and-match). */
  sha256: Sha256Hex,
  /** true: pulled; false: restored (a newer restore makes devices ignore an older, replayed yank). */
  yanked: z.boolean(),
  /** Not trimmed here (a transform would change what was signed): blank or padded is refused. */
  reason: z
    .string()
    .min(1)
    .max(500)
    .regex(/^\S(?:[\s\S]*\S)?$/, 'no leading or trailing whitespace')
    .nullable(),
  /** When the maintainer signed it: each device acts on a statement at most once, newest wins. */
  at: IsoDateTime,
  /** After this instant agents ignore it (limits how long a captured statement can be replayed). */
  expires: IsoDateTime,
})
export type YankStatement = z.infer<typeof YankStatement>

export const SignedYankStatement = signedEnvelope(YankStatement)
export type SignedYankStatement = z.infer<typeof SignedYankStatement>
