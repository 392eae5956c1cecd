/**
 * Signs each index answer with INDEX_SIGNING_KEY (ADR 0032), each rollout answer and each prefetch
 * queue (ADR 0034 and its 2026-11-26 amendment): a
 * short-lived statement of what the edge served and until when it may be believed. Devices configured with the key's public half
 * (`indexKeys`) refuse an index without a fresh one, so a cache, mirror or replay in front of the edge
 * cannot hold them on an old release for longer than the statement's lifetime.
 */
import type { ArtifactIndex } from '../../schemas/artifact-index.ts'
import { base64Bytes } from '../../schemas/base64.ts'
import {
  digestWithoutStatement,
  type IndexStatement,
  indexDigest,
  type SignedIndexStatement,
} from '../../schemas/index-statement.ts'
import type {
  PrefetchPlanStatement,
  PrefetchQueue,
  SignedPrefetchPlanStatement,
} from '../../schemas/prefetch.ts'
import type { RolloutCheck } from '../../schemas/rollout.ts'
import type { RolloutCheckStatement, SignedRolloutCheckStatement } from '../../schemas/rollout-statement.ts'
import { ED25519, type Envelope, keyIdOf, signEnvelope } from '../../schemas/signed-envelope.ts'
import { Problem } from '../http/problem.ts'

interface IndexSigner {
  keyid: string
  privateKey: CryptoKey
}

/** The last key imported, per isolate: importing on every answer would repeat the same work. */
let cached: { configured: string; signer: IndexSigner } | undefined

function misconfigured(why: string): Problem {
  // The operator's mistake, not the client's: 500, so no index goes out unsigned because of a typo.
  return new Problem(500, 'internal', `INDEX_SIGNING_KEY ${why}`)
}

/**
 * The key in INDEX_SIGNING_KEY: base64 of a PKCS#8 Ed25519 private key, as `deltaport keygen` writes
 * privateKey. Its keyid is derived from the public half, as devices derive it from indexKeys.
 */
async function importSigner(configured: string): Promise<IndexSigner> {
  const der = base64Bytes(configured)
  if (!der) throw misconfigured('is not base64')
  let privateKey: CryptoKey
  let jwk: JsonWebKey
  try {
    privateKey = await crypto.subtle.importKey('pkcs8', der, ED25519, true, ['sign'])
    jwk = (await crypto.subtle.exportKey('jwk', privateKey)) as JsonWebKey
  } catch {
    throw misconfigured('is not a PKCS#8 Ed25519 private key (base64, as `deltaport keygen` writes it)')
  }
  const publicRaw = jwk.x ? base64Bytes(jwk.x.replaceAll('-', '+').replaceAll('_', '/')) : null
  if (!publicRaw) throw misconfigured('has no public half')
  return { keyid: await keyIdOf(publicRaw), privateKey }
}

async function signerFor(configured: string): Promise<IndexSigner> {
  if (cached?.configured !== configured) cached = { configured, signer: await importSigner(configured) }
  return cached.signer
}

/**
 * Signs `statement` with INDEX_SIGNING_KEY; undefined when the key is blank (the local default:
 * answers go out unsigned, as before ADR 0032).
 */
export async function signWithIndexKey<Body>(
  env: Pick<Env, 'INDEX_SIGNING_KEY'>,
  statement: Body,
): Promise<Envelope<Body> | undefined> {
  const configured = (env.INDEX_SIGNING_KEY ?? '').trim()
  if (configured.length === 0) return undefined
  const signer = await signerFor(configured)
  return signEnvelope(statement, signer.keyid, signer.privateKey)
}

/** When a statement issued at `now` and valid for `ttlSeconds` is issued and expires. */
function lifetime(now: Date, ttlSeconds: number): { issuedAt: string; expires: string } {
  return { issuedAt: now.toISOString(), expires: new Date(now.getTime() + ttlSeconds * 1000).toISOString() }
}

/** The statement for `index` as served at `now`, valid for `ttlSeconds` (undefined: no key). */
export async function signIndex(
  env: Pick<Env, 'INDEX_SIGNING_KEY'>,
  index: ArtifactIndex,
  ttlSeconds: number,
  now: Date = new Date(),
): Promise<SignedIndexStatement | undefined> {
  const statement: IndexStatement = {
    _type: 'deltaport/index',
    name: index.name,
    indexSha256: await indexDigest(index),
    latestSerial: index.latestSerial,
    ...lifetime(now, ttlSeconds),
  }
  return signWithIndexKey(env, statement)
}

/**
 * The statement for one rollout answer to `client`, valid for `ttlSeconds` (ADR 0034; undefined: no
 * key). It covers the answer exactly, so neither another client's answer nor an older one passes.
 */
export async function signRolloutCheck(
  env: Pick<Env, 'INDEX_SIGNING_KEY'>,
  check: RolloutCheck,
  client: string,
  ttlSeconds: number,
  now: Date = new Date(),
): Promise<SignedRolloutCheckStatement | undefined> {
  const statement: RolloutCheckStatement = {
    _type: 'deltaport/rollout-check',
    name: check.name,
    channel: check.channel,
    client,
    checkSha256: await digestWithoutStatement(check),
    ...lifetime(now, ttlSeconds),
  }
  return signWithIndexKey(env, statement)
}

/**
 * The statement for one prefetch queue planned for `client` in `region`, valid for `ttlSeconds` (ADR
 * 0034, amended 2026-11-26; undefined: no key). It covers the queue exactly (every item and its plan),
 * so neither another device's queue nor an altered one passes.
 */
export async function signPrefetchPlan(
  env: Pick<Env, 'INDEX_SIGNING_KEY'>,
  queue: PrefetchQueue,
  planned: { client: string; region: string },
  ttlSeconds: number,
  now: Date = new Date(),
): Promise<SignedPrefetchPlanStatement | undefined> {
  const statement: PrefetchPlanStatement = {
    _type: 'deltaport/prefetch-plan',
    client: planned.client,
    region: planned.region,
    queueSha256: await digestWithoutStatement(queue),
    ...lifetime(now, ttlSeconds),
  }
  return signWithIndexKey(env, statement)
}
