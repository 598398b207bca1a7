/**
 * The reconnect delay: exponential backoff with full jitter.
 *
 * Owns only the arithmetic; never schedules a timer or decides whether to reconnect.
 */

/** Full-jitter exponential backoff: uniform in [0, min(max, min · 2^attempt)]. */
export function backoffDelay(attempt: number, min: number, max: number, random: () => number): number {
  const cap = Math.min(max, min * Math.pow(2, Math.min(attempt, 30)));
  return Math.floor(random() * cap);
}
