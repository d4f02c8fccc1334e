/**
 * A test file's one-replica stack with `make dev`'s control port (startControlledStack): started
 * before its tests, stopped after them. Read `stack` and `url` inside the tests.
 */
import { afterAll, beforeAll } from "bun:test";
import type { Server } from "bun";
import type { RollingStack } from "../rolling.ts";
import { startControlledStack, type TestStack } from "./stack.ts";

export interface ControlledStack {
  stack: TestStack & RollingStack;
  control: Server<undefined>;
  /** The control port's base URL. */
  url: string;
}

/** Registers the hooks in the current scope (file or describe); the fields are set once beforeAll ran. */
export function useControlledStack(): ControlledStack {
  const controlled = {} as ControlledStack;
  beforeAll(async () => {
    Object.assign(controlled, await startControlledStack());
  }, 60_000);
  afterAll(async () => {
    controlled.control?.stop(true);
    await controlled.stack?.stop(5_000);
  });
  return controlled;
}
