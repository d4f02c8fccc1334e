// Bun imports `.proto` files as text (`import x from "./a.proto" with { type: "text" }`), which is
// how protos get embedded into a `bun build --compile` binary. TypeScript needs to be told the
// default export is that text. One declaration serves the whole tree (lib/proto.ts uses it too);
// It lives in lib/ beside proto.ts, the main user.
declare module "*.proto" {
  const text: string;
  export default text;
}
