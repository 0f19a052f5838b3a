ALTER TABLE `nodes` ADD `vms_rev` integer DEFAULT 0 NOT NULL;--> statement-breakpoint
-- A node's revision of its VM records, a new random value in the same statement as any change to
-- what the inventory digest covers (the VM's node, presence, name, state, vCPUs, memory), whoever
-- writes it: the node's session compares the agent's digest with the one it computed at a revision
-- and reads the node's VM rows again only when the revision moved or the digests differ. Random, not
-- counted: a database restored to an earlier point never comes back to a revision already seen.
CREATE TRIGGER `vms_rev_insert` AFTER INSERT ON `vms` WHEN NEW.`node_id` IS NOT NULL BEGIN
  UPDATE `nodes` SET `vms_rev` = random() WHERE `id` = NEW.`node_id`;
END;--> statement-breakpoint
CREATE TRIGGER `vms_rev_delete` AFTER DELETE ON `vms` WHEN OLD.`node_id` IS NOT NULL BEGIN
  UPDATE `nodes` SET `vms_rev` = random() WHERE `id` = OLD.`node_id`;
END;--> statement-breakpoint
CREATE TRIGGER `vms_rev_update` AFTER UPDATE OF `id`, `node_id`, `name`, `state`, `vcpus`, `memory_mib`, `missing` ON `vms`
WHEN OLD.`id` IS NOT NEW.`id` OR OLD.`node_id` IS NOT NEW.`node_id` OR OLD.`name` IS NOT NEW.`name`
  OR OLD.`state` IS NOT NEW.`state` OR OLD.`vcpus` IS NOT NEW.`vcpus` OR OLD.`memory_mib` IS NOT NEW.`memory_mib`
  OR OLD.`missing` IS NOT NEW.`missing`
BEGIN
  UPDATE `nodes` SET `vms_rev` = random() WHERE `id` IN (OLD.`node_id`, NEW.`node_id`);
END;
