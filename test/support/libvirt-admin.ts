// What the real-QEMU tests and benches do to libvirt themselves (define a guest, start, stop, remove
// it), through the agent's own libvirt client: one connection, the calls named as virsh names them.
import { LibvirtClient, type DomainLike, type DomainRef } from "../../agent/libvirt/index.ts";

export class LibvirtAdmin {
  private client: LibvirtClient | null = null;
  private readonly uri: string;

  constructor(opts: { uri: string }) {
    this.uri = opts.uri;
  }

  private get open(): LibvirtClient {
    if (!this.client) throw new Error("LibvirtAdmin: connectOpen() first");
    return this.client;
  }

  async connectOpen(): Promise<void> {
    this.client = await LibvirtClient.connect(this.uri);
  }

  async connectClose(): Promise<void> {
    await this.client?.close();
    this.client = null;
  }

  domainDefineXML = (xml: string): Promise<DomainRef> => this.open.defineXml(xml);
  domainCreateXML = (xml: string): Promise<DomainRef> => this.open.createXml(xml);
  domainLookupByUUIDString = (uuid: string): Promise<DomainRef> => this.open.lookupByUuid(uuid);
  domainGetXMLDesc = (dom: DomainLike): Promise<string> => this.open.domainXml(dom);
  domainCreate = (dom: DomainLike): Promise<void> => this.open.start(dom);
  domainResume = (dom: DomainLike): Promise<void> => this.open.resume(dom);
  domainDestroy = (dom: DomainLike): Promise<void> => this.open.destroy(dom);
  domainUndefine = (dom: DomainLike): Promise<void> => this.open.undefine(dom);
}
