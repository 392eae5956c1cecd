import { z } from 'zod'
import {
  MAX_ROLLOUT_STATEMENT_LIFETIME_MS,
  type RolloutControlAction,
  SignedRolloutControl,
  type SignedRolloutControlStatement,
} from '../../schemas/rollout-control-statement.ts'
import { getRuntimeConfig } from '../config/runtime-config.ts'
import { Problem } from '../http/problem.ts'
import { parseJsonBody, validJson } from '../http/validate.ts'
import { MAX_STATEMENT_AHEAD_MS } from '../storage/yank.ts'
import { assertMaintainerSigned } from './maintainer-keys.ts'

/** The rollout a control request is about, and what it asks. */
export interface RolloutControlTarget {
  name: string
  channel: string
  action: RolloutControlAction
}

/** A control request's body as the edge acts on it, and when its statement was signed (if it had one). */
export interface RolloutControlRequest<T> {
  request: T
  signedAt?: string
}

const EMPTY_BODY = new TextEncoder().encode('{}')

/**
 * Reads the body of a rollout start, pause, resume or abort (ADR 0038). Either the plain body, or
 * `{ "statement": … }`: a maintainer-signed statement naming this rollout and action, whose `request`
 * text is the body acted on. The statement must fit the request, be current, and carry the maintainers'
 * signatures (MAINTAINER_KEYS); with runtime config `rollout.requireStatement` a plain body is refused.
 * Whether the statement is newer than the last one acted on is the coordinator's check (it alone sees
 * every control request of the rollout, one at a time).
 */
export async function rolloutControlRequest<Schema extends z.ZodType>(
  env: Env,
  body: Uint8Array,
  target: RolloutControlTarget,
  schema: Schema,
): Promise<RolloutControlRequest<z.infer<Schema>>> {
  const json = parseJsonBody(body.length === 0 ? EMPTY_BODY : body, z.unknown())
  // Decided by the key, not by trying both shapes: a broken statement must never pass as a plain body.
  if (typeof json !== 'object' || json === null || !('statement' in json)) {
    await refuseUnsignedIfRequired(env, target)
    return { request: validJson(json, schema) }
  }
  const { statement } = validJson(json, SignedRolloutControl)
  assertFits(statement, target)
  const { name, channel, action } = target
  await assertMaintainerSigned(
    env,
    statement,
    `the ${action} statement for the ${channel} rollout of ${name}`,
  )
  return {
    request: parseJsonBody(new TextEncoder().encode(statement.signed.request), schema),
    signedAt: statement.signed.at,
  }
}

async function refuseUnsignedIfRequired(env: Env, target: RolloutControlTarget): Promise<void> {
  if (!(await getRuntimeConfig(env)).rollout.requireStatement) return
  throw new Problem(
    422,
    'untrusted-signature',
    `this edge takes rollout control only on a maintainer-signed statement (runtime config rollout.requireStatement): sign the ${target.action} with a maintainer key (deltaport rollout ${target.action} --key)`,
  )
}

/** A statement must name this rollout and action, be signed no later than now, and not be stale. */
function assertFits(statement: SignedRolloutControlStatement, target: RolloutControlTarget): void {
  const said = statement.signed
  const now = Date.now()
  const at = Date.parse(said.at)
  const expires = Date.parse(said.expires)
  const mismatch =
    said.name !== target.name || said.channel !== target.channel
      ? `it is about the ${said.channel} rollout of ${said.name}`
      : said.action !== target.action
        ? `it says ${said.action}`
        : expires <= now
          ? `it expired at ${said.expires}`
          : expires - at > MAX_ROLLOUT_STATEMENT_LIFETIME_MS
            ? 'it is valid for more than a day after signing'
            : at > now + MAX_STATEMENT_AHEAD_MS
              ? `it was signed at ${said.at}, ahead of this edge's clock (check the signing machine's clock)`
              : null
  if (mismatch) {
    throw new Problem(422, 'invalid-statement', `the signed statement does not fit this request: ${mismatch}`)
  }
}
