import {
  OutcomeReceipt,
  RolloutCheck,
  type RolloutOutcome,
  RolloutSpec,
  type RolloutSpecInput,
  RolloutStatus,
} from '../../schemas/rollout.ts'
import type { EdgeClient } from '../edge-client.ts'
import { AgentError } from '../errors.ts'
import { type IndexTrust, verifyServedRolloutCheck } from '../index-trust.ts'
import type { KeyFiles } from '../publish.ts'
import { errorFromResponse } from '../transfer/error-response.ts'
import { JSON_LIMITS } from '../transfer/read-json.ts'
import { signedControlBody } from './control-statement.ts'

/**
 * The agent's and the maintainer's side of /v1/rollouts (workers/routes/rollouts.ts): every answer is
 * zod-parsed, every failure an AgentError.
 */

export function rolloutPath(name: string, channel: string, suffix = ''): string {
  // Scoped names travel as one segment (`@scope%2Fname`), as in artifactPath.
  return `/v1/rollouts/${encodeURIComponent(name)}/${encodeURIComponent(channel)}${suffix}`
}

/**
 * Is this client in the rollout of `name` on `channel`? Null when there is no rollout there. With
 * `trust` (a device's indexKeys) the answer must carry a fresh statement signed for this client
 * (index-trust.ts verifyServedRolloutCheck); without, it is taken as sent.
 */
export async function checkRollout(
  edge: EdgeClient,
  name: string,
  channel: string,
  clientId: string,
  trust?: Pick<IndexTrust, 'keys' | 'now'>,
): Promise<RolloutCheck | null> {
  const response = await edge.request(`${rolloutPath(name, channel)}?client=${encodeURIComponent(clientId)}`)
  if (response.status === 404) {
    await response.body?.cancel()
    return null
  }
  if (!response.ok) throw await errorFromResponse(response, `rollout of ${name} on ${channel}`)
  const what = `a rollout answer for ${name}`
  const check =
    trust && trust.keys.length > 0
      ? await verifyServedRolloutCheck(
          await edge.readJson(response, JSON_LIMITS.rollout, what),
          { name, channel, client: clientId },
          trust,
        )
      : await parseJson(edge, response, RolloutCheck, what)
  if (check.name !== name || check.channel !== channel)
    throw new AgentError(
      'edge-rejected',
      `the edge answered for another rollout (${check.name}/${check.channel})`,
    )
  return check
}

/** Reports an install outcome to the rollout; throws AgentError when the edge refuses it. */
export async function reportOutcome(
  edge: EdgeClient,
  name: string,
  channel: string,
  outcome: RolloutOutcome,
): Promise<OutcomeReceipt> {
  const response = await edge.request(rolloutPath(name, channel, '/outcomes'), {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(outcome),
  })
  if (!response.ok) throw await errorFromResponse(response, `reporting ${outcome.outcome} for ${name}`)
  return parseJson(edge, response, OutcomeReceipt, 'an outcome receipt')
}

export type ReportResult = { reported: true; receipt: OutcomeReceipt } | { reported: false; reason: string }

/**
 * reportOutcome for code paths that must not fail because of it (an install that worked, a rollback):
 * the outcome is telemetry about the release, never a reason to undo what the device did.
 */
export async function reportOutcomeQuietly(
  edge: EdgeClient,
  name: string,
  channel: string,
  outcome: RolloutOutcome,
): Promise<ReportResult> {
  try {
    return { reported: true, receipt: await reportOutcome(edge, name, channel, outcome) }
  } catch (error) {
    return { reported: false, reason: error instanceof Error ? error.message : String(error) }
  }
}

export type RolloutAction = 'start' | 'pause' | 'resume' | 'abort' | 'status'

/**
 * Maintainer control (bearer token): start with a spec, pause/abort with a reason, resume, status. With
 * `keyFile` a control request is sent as a statement signed by those keys (ADR 0038), which an edge
 * with runtime config `rollout.requireStatement` insists on.
 */
export async function controlRollout(
  edge: EdgeClient,
  token: string,
  name: string,
  channel: string,
  action: RolloutAction,
  request?: RolloutSpecInput | { reason?: string },
  keyFile?: KeyFiles,
): Promise<RolloutStatus> {
  if (action === 'start') {
    const spec = RolloutSpec.safeParse(request)
    // One issue per stage can say the same thing (every stage too long): say it once.
    if (!spec.success)
      throw new AgentError(
        'usage',
        `invalid rollout: ${[...new Set(spec.error.issues.map((i) => i.message))].join('; ')}`,
      )
  }
  const body =
    keyFile && action !== 'status'
      ? await signedControlBody({ name, channel, action }, request, keyFile)
      : request
  const response = await edge.request(rolloutPath(name, channel, `/${action}`), {
    method: action === 'status' ? 'GET' : 'POST',
    headers: {
      authorization: `Bearer ${token}`,
      ...(body === undefined ? {} : { 'content-type': 'application/json' }),
    },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  })
  if (!response.ok) throw await errorFromResponse(response, `rollout ${action} of ${name} on ${channel}`)
  return parseJson(edge, response, RolloutStatus, 'a rollout status')
}

/** `what` ("a rollout status") read bounded and stall-timed (edge.readJson), then parsed by `schema`. */
async function parseJson<T>(
  edge: EdgeClient,
  response: Response,
  schema: { safeParse(v: unknown): { success: true; data: T } | { success: false } },
  what: string,
): Promise<T> {
  const parsed = schema.safeParse(await edge.readJson(response, JSON_LIMITS.rollout, what))
  if (!parsed.success) throw new AgentError('edge-rejected', `the edge sent ${what} that is malformed`)
  return parsed.data
}
