import { Column, Entity, PrimaryColumn } from 'typeorm';

@Entity({ name: 'runs' })
export class RunEntity {
  @PrimaryColumn({ type: 'uuid' }) id!: string;
  @Column({ type: 'text' }) status!: string;
  @Column({ name: 'status_reason', type: 'text', nullable: true }) statusReason!: string | null;
  @Column({ type: 'jsonb' }) config!: object;
  @Column({ name: 'completed_rounds', type: 'integer' }) completedRounds!: number;
  @Column({ name: 'current_model_hash', type: 'text', nullable: true }) currentModelHash!: string | null;
  @Column({ name: 'strategy_state_hash', type: 'text', nullable: true }) strategyStateHash!: string | null;
  /** Feature alignment's next reference (counts and moments); not loaded with the run (select: false). */
  @Column({ name: 'alignment_reference', type: 'jsonb', nullable: true, select: false }) alignmentReference?: object | null;
  @Column({ name: 'final_report', type: 'jsonb', nullable: true }) finalReport!: object | null;
  @Column({ name: 'created_at', type: 'timestamptz' }) createdAt!: Date;
  @Column({ name: 'updated_at', type: 'timestamptz' }) updatedAt!: Date;
}
