import { Column, Entity, PrimaryColumn } from 'typeorm';

@Entity({ name: 'rounds' })
export class RoundEntity {
  @PrimaryColumn({ name: 'run_id', type: 'uuid' }) runId!: string;
  @PrimaryColumn({ type: 'integer' }) round!: number;
  @Column({ type: 'text' }) status!: string;
  @Column({ type: 'jsonb' }) participants!: string[];
  @Column({ name: 'base_model_hash', type: 'text' }) baseModelHash!: string;
  @Column({ name: 'model_hash', type: 'text', nullable: true }) modelHash!: string | null;
  @Column({ name: 'site_metrics', type: 'jsonb', nullable: true }) siteMetrics!: object | null;
  @Column({ name: 'central_metrics', type: 'jsonb', nullable: true }) centralMetrics!: object | null;
  @Column({ type: 'text', nullable: true }) reason!: string | null;
  @Column({ name: 'started_at', type: 'timestamptz' }) startedAt!: Date;
  @Column({ name: 'completed_at', type: 'timestamptz', nullable: true }) completedAt!: Date | null;
}
