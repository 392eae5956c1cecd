import { z } from 'zod'
import * as schemas from './index.ts'

/** The wire and storage types published as JSON Schema for docs and non-TypeScript clients. */
export const EXPORTED = {
  ArtifactManifest: schemas.ArtifactManifest,
  SignedManifest: schemas.SignedManifest,
  ArtifactIndex: schemas.ArtifactIndex,
  ServedIndex: schemas.ServedIndex,
  SignedIndexStatement: schemas.SignedIndexStatement,
  SignedRoot: schemas.SignedRoot,
  ClientConfiguration: schemas.ClientConfiguration,
  DeltaStreamBlockHeader: schemas.DeltaStreamBlockHeader,
  DeltaStreamMetadata: schemas.DeltaStreamMetadata,
  PrefetchQueue: schemas.PrefetchQueue,
  ServedPrefetchQueue: schemas.ServedPrefetchQueue,
  TelemetryBatch: schemas.TelemetryBatch,
  RuntimeConfig: schemas.RuntimeConfig,
  ProblemDetails: schemas.ProblemDetails,
  RolloutSpec: schemas.RolloutSpec,
  ServedRolloutCheck: schemas.ServedRolloutCheck,
  RolloutOutcome: schemas.RolloutOutcome,
  RolloutStatus: schemas.RolloutStatus,
  ShardPlan: schemas.ShardPlan,
  ShardMetrics: schemas.ShardMetrics,
  SwapSettings: schemas.SwapSettings,
  EnrollRequest: schemas.EnrollRequest,
  DeviceEnrollment: schemas.DeviceEnrollment,
  EnrollmentCodeRequest: schemas.EnrollmentCodeRequest,
  DeviceList: schemas.DeviceList,
} satisfies Record<string, z.ZodType>

export function jsonSchemaDocuments(): Record<string, string> {
  return Object.fromEntries(
    Object.entries(EXPORTED).map(([name, schema]) => [
      `${name}.schema.json`,
      `${JSON.stringify(z.toJSONSchema(schema, { io: 'input', unrepresentable: 'any' }), null, 2)}\n`,
    ]),
  )
}
