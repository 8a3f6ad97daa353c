// A tiny node-opcua server for pipetwin's interop test: a few Double variables in ns=1
// (node-opcua's own namespace), changed every 100 ms with source timestamps.
// Usage: node server.js PORT   -> prints "ENDPOINT opc.tcp://127.0.0.1:PORT/interop" when ready.
const path = require("path");
const os = require("os");
const fs = require("fs");
const { OPCUAServer, DataType, StatusCodes, OPCUACertificateManager } = require("node-opcua");

const NAMES = ["IX-PT-01", "IX-PT-02", "IX-FT-01"];

async function main() {
  const port = parseInt(process.argv[2] || "4840", 10);
  const pki = fs.mkdtempSync(path.join(os.tmpdir(), "pipetwin-node-opcua-"));
  const serverCertificateManager = new OPCUACertificateManager({ rootFolder: path.join(pki, "pki"),
                                                                 automaticallyAcceptUnknownCertificate: true });
  const server = new OPCUAServer({ port, resourcePath: "/interop", serverCertificateManager,
                                   buildInfo: { productName: "pipetwin-interop" } });
  await server.initialize();
  const addressSpace = server.engine.addressSpace;
  const ns = addressSpace.getOwnNamespace();
  const device = ns.addObject({ organizedBy: addressSpace.rootFolder.objects, browseName: "Field" });
  const variables = NAMES.map((name) => ns.addVariable({
    componentOf: device, nodeId: `s=${name}`, browseName: name, dataType: "Double",
    value: { dataType: DataType.Double, value: 0.0 },
  }));
  let tick = 0;
  setInterval(() => {
    tick += 1;
    variables.forEach((v, i) => {
      v.setValueFromSource({ dataType: DataType.Double, value: 100.0 * (i + 1) + tick }, StatusCodes.Good, new Date());
    });
  }, 100);
  await server.start();
  console.log(`ENDPOINT opc.tcp://127.0.0.1:${port}/interop`);
  const stop = async () => { await server.shutdown(0); fs.rmSync(pki, { recursive: true, force: true }); process.exit(0); };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

main().catch((err) => { console.error(err); process.exit(1); });
