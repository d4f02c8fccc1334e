/**
 * Where projects live. The routes know only this interface, so a store is chosen at start-up
 * (`STORE`, see ./index.ts) without touching them. Every implementation must hand out ids that
 * are unique across all replicas sharing the store, never reused.
 */
export interface Project {
  /** Positive, unique across replicas, increasing in creation order. */
  id: number;
  title: string;
  /** ISO 8601 UTC timestamp, e.g. `2025-01-31T12:00:00.000Z`. */
  createdAt: string;
}

/**
 * The store cannot serve now (its server is down, slow or refusing writes); the request may be
 * retried later. The app answers 503 with Retry-After instead of 500.
 */
export class StoreUnavailableError extends Error {
  override name = "StoreUnavailableError";
}

/**
 * The store holds as many projects as it is configured for (MAX_PROJECTS): nothing more can be
 * created. Not transient, unlike StoreUnavailableError: the app answers 507, without Retry-After.
 */
export class StoreFullError extends Error {
  override name = "StoreFullError";

  constructor(readonly maxProjects: number) {
    super(`the project store holds its maximum of ${maxProjects} projects`);
  }
}

export interface ListOptions {
  /** At most this many projects. */
  limit: number;
  /** Only projects with an id greater than this (keyset pagination); 0 = from the start. */
  after: number;
}

export interface ProjectStore {
  /** Rejects with StoreFullError when the store already holds its maximum of projects. */
  create(title: string): Promise<Project>;
  get(id: number): Promise<Project | null>;
  /** Projects in ascending id order. */
  list(options: ListOptions): Promise<Project[]>;
  /** Resolves when the store can serve requests; rejects with the reason otherwise (readiness). */
  ping(): Promise<void>;
  close(): Promise<void>;
}
