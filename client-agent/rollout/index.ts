/** The agent side of staged rollouts (docs/decisions/0010-rollout-coordinator.md). */
export {
  checkRollout,
  controlRollout,
  type ReportResult,
  reportOutcome,
  reportOutcomeQuietly,
  rolloutPath,
} from './client.ts'
export { agentClientId } from './client-id.ts'
export { type OutcomeToReport, rolloutReporter, toErrorClass } from './reporter.ts'
export { installWithinRollout, type RolloutGate, rollbackAndReport, rolloutGate } from './update-gate.ts'
