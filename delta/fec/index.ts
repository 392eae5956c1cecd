export { MAX_TOTAL_BLOCKS } from './matrix.ts'
export { encodeParity, reconstruct } from './reed-solomon.ts'
