/**
 * A name without addresses (NXDOMAIN: a spare slot, a headless Service with no ready pod) is a
 * state reported when it begins; a DNS failure is reported every time (upstream/discovery.ts).
 */
import { describe, expect, test } from "bun:test";
import { Discovery, type HostResolver } from "../src/upstream/discovery.ts";

const dnsError = (code: string) => Object.assign(new Error(`queryA ${code} svc`), { code });

describe("discovery reports", () => {
  test("NXDOMAIN once when it begins, again only after the name had addresses; SERVFAIL on every refresh", async () => {
    let answer: string[] | Error = dnsError("ENOTFOUND");
    const resolver: HostResolver = {
      resolve: async () => {
        if (answer instanceof Error) throw answer;
        return answer;
      },
    };
    const empty: boolean[] = [];
    const failures: string[] = [];
    const discovery = new Discovery(["svc:80"], {
      refreshMs: 60_000,
      resolver,
      onChange: () => {},
      onError: (_host, err) => failures.push((err as { code: string }).code),
      onNoAddresses: (_host, _err, hadAddresses) => empty.push(hadAddresses),
    });
    await discovery.ready;
    await discovery.refresh();
    await discovery.refresh();
    expect(empty).toEqual([false]);
    answer = ["10.0.0.1"];
    await discovery.refresh();
    answer = dnsError("ENOTFOUND");
    await discovery.refresh();
    await discovery.refresh();
    expect(empty).toEqual([false, true]);
    answer = dnsError("ESERVFAIL");
    await discovery.refresh();
    await discovery.refresh();
    expect(failures).toEqual(["ESERVFAIL", "ESERVFAIL"]);
    expect(empty).toEqual([false, true]);
    discovery.stop();
  });
});
