import {
  type RolloutControlAction,
  type RolloutControlStatement,
  SignedRolloutControl,
} from '../../schemas/rollout-control-statement.ts'
import { type KeyFiles, readKeyFiles } from '../publish.ts'
import { signDocumentByAll } from '../signing.ts'

/** How long the edge may act on a signed control request: time to send it, not to keep it. */
export const CONTROL_STATEMENT_LIFETIME_MS = 3600 * 1000

/** The rollout a control request is about and what it asks. */
export interface ControlTarget {
  name: string
  channel: string
  action: RolloutControlAction
}

/**
 * The body of a signed rollout control request (ADR 0038): a statement by each of `keyFile`'s keys
 * that carries `request` as the JSON text the edge will act on (`{}` when the action has no body).
 */
export async function signedControlBody(
  target: ControlTarget,
  request: object | undefined,
  keyFile: KeyFiles,
  now = new Date(),
): Promise<SignedRolloutControl> {
  const keys = await readKeyFiles(keyFile)
  const statement: RolloutControlStatement = {
    _type: 'deltaport/rollout-control',
    ...target,
    request: JSON.stringify(request ?? {}),
    at: now.toISOString(),
    expires: new Date(now.getTime() + CONTROL_STATEMENT_LIFETIME_MS).toISOString(),
  }
  return SignedRolloutControl.parse({ statement: await signDocumentByAll(statement, keys) })
}
