import { Column, Entity, PrimaryColumn } from 'typeorm';

@Entity({ name: 'sites' })
export class SiteEntity {
  @PrimaryColumn({ name: 'site_id', type: 'text' }) siteId!: string;
  @Column({ name: 'box_public_key', type: 'text' }) boxPublicKey!: string;
  @Column({ name: 'sign_public_key', type: 'text', nullable: true }) signPublicKey!: string | null;
  @Column({ type: 'text' }) status!: string;
  @Column({ type: 'text' }) backend!: string;
  @Column({ type: 'text' }) software!: string;
  @Column({ name: 'train_samples', type: 'integer' }) trainSamples!: number;
  @Column({ name: 'validation_samples', type: 'integer' }) validationSamples!: number;
  @Column({ name: 'labelled_images', type: 'integer', default: 0 }) labelledImages!: number;
  @Column({ name: 'first_seen_at', type: 'timestamptz' }) firstSeenAt!: Date;
  @Column({ name: 'last_seen_at', type: 'timestamptz' }) lastSeenAt!: Date;
}
