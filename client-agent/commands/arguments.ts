import { InvalidArgumentError } from 'commander'

/** A whole number of seconds (0 allowed), bounded so it cannot overflow a timer. */
export function parseSeconds(value: string): number {
  if (!/^\d{1,7}$/.test(value)) throw new InvalidArgumentError('a whole number of seconds')
  return Number(value)
}
