import { Column, Entity, PrimaryColumn } from 'typeorm';

@Entity({ name: 'contributions' })
export class ContributionEntity {
  @PrimaryColumn({ type: 'uuid' }) id!: string;
  @Column({ name: 'run_id', type: 'uuid' }) runId!: string;
  @Column({ type: 'integer' }) round!: number;
  @Column({ type: 'text' }) kind!: string;
  @Column({ name: 'site_id', type: 'text' }) siteId!: string;
  @Column({ type: 'text' }) status!: string;
  @Column({ type: 'text', nullable: true }) reason!: string | null;
  @Column({ name: 'num_samples', type: 'integer', nullable: true }) numSamples!: number | null;
  @Column({ type: 'jsonb', nullable: true }) metrics!: object | null;
  @Column({ name: 'model_hash', type: 'text', nullable: true }) modelHash!: string | null;
  @Column({ type: 'integer' }) bytes!: number;
  @Column({ type: 'text', nullable: true }) nonce!: string | null;
  @Column({ name: 'received_at', type: 'timestamptz' }) receivedAt!: Date;
}
